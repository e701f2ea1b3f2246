//! Byte layouts of the store's keys.

use crate::Error;

/// Marks one more `u64` in an order key; sorts after [`ORDER_END`].
const ORDER_NEXT: u8 = 1;
/// Ends the `u64`s of an order key; sorts before [`ORDER_NEXT`] so `[1]` < `[1, 0]`.
const ORDER_END: u8 = 0;

/// Key of an item in the `items` tree: its `order` then its id, so that byte order equals
/// `(order, id)` order (`Vec<u64>` compared lexicographically, shorter prefix first).
pub(crate) fn item_key(order: &[u64], id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(order.len() * 9 + 1 + id.len());
    for part in order {
        key.push(ORDER_NEXT);
        key.extend_from_slice(&part.to_be_bytes());
    }
    key.push(ORDER_END);
    key.extend_from_slice(id.as_bytes());
    key
}

/// Prefix shared by every record of a step: `step \0`.
pub(crate) fn step_prefix(step: &str) -> Result<Vec<u8>, Error> {
    if step.is_empty() {
        return Err(Error::InvalidStep {
            name: step.to_owned(),
            reason: "a step name must not be empty",
        });
    }
    if step.contains('\0') {
        return Err(Error::InvalidStep {
            name: step.to_owned(),
            reason: "a step name must not contain a NUL byte",
        });
    }
    let mut key = Vec::with_capacity(step.len() + 1);
    key.extend_from_slice(step.as_bytes());
    key.push(0);
    Ok(key)
}

/// Key of a step's record for an item: `step \0 item_id`.
pub(crate) fn step_key(step: &str, item_id: &str) -> Result<Vec<u8>, Error> {
    let mut key = step_prefix(step)?;
    key.extend_from_slice(item_id.as_bytes());
    Ok(key)
}

/// The item id at the end of a `step \0 item_id` key.
pub(crate) fn item_id_of(prefix_len: usize, key: &[u8]) -> Result<String, Error> {
    let id = key.get(prefix_len..).unwrap_or_default();
    String::from_utf8(id.to_vec()).map_err(|_| Error::Corrupt {
        key: display(key),
        message: "item id is not UTF-8".to_owned(),
    })
}

/// The id at the end of an item key (after its order parts).
pub(crate) fn item_key_id(key: &[u8]) -> Result<String, Error> {
    let mut rest = key;
    while let [ORDER_NEXT, tail @ ..] = rest {
        let Some((_, tail)) = tail.split_first_chunk::<8>() else {
            break;
        };
        rest = tail;
    }
    match rest
        .strip_prefix(&[ORDER_END])
        .map(|id| std::str::from_utf8(id))
    {
        Some(Ok(id)) => Ok(id.to_owned()),
        _ => Err(Error::Corrupt {
            key: format!("items:{}", display_item(key)),
            message: "malformed item key".to_owned(),
        }),
    }
}

/// A key made readable for messages: NUL separators shown as `/`, order parts as numbers.
pub(crate) fn display(key: &[u8]) -> String {
    String::from_utf8_lossy(key).replace('\0', "/")
}

/// An item key made readable: `[1, 2]/id`.
pub(crate) fn display_item(key: &[u8]) -> String {
    let mut order = Vec::new();
    let mut rest = key;
    while let [ORDER_NEXT, tail @ ..] = rest {
        let Some((part, tail)) = tail.split_first_chunk::<8>() else {
            break;
        };
        order.push(u64::from_be_bytes(*part));
        rest = tail;
    }
    let id = rest.strip_prefix(&[ORDER_END]).unwrap_or(rest);
    format!("{order:?}/{}", String::from_utf8_lossy(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_keys_sort_like_order_vectors() {
        let mut orders: Vec<(Vec<u64>, &str)> = vec![
            (vec![10], "a"),
            (vec![1, 5], "a"),
            (vec![1], "b"),
            (vec![1], "a"),
            (vec![1, 0], "a"),
            (vec![2], "a"),
            (vec![], "z"),
            (vec![u64::MAX], "a"),
            (vec![256], "a"),
        ];
        let mut by_key = orders.clone();
        by_key.sort_by_key(|(order, id)| item_key(order, id));
        orders.sort();
        assert_eq!(by_key, orders);
    }

    #[test]
    fn step_keys_refuse_ambiguous_names() {
        assert!(matches!(
            step_key("a\0b", "x"),
            Err(Error::InvalidStep { .. })
        ));
        assert!(matches!(step_key("", "x"), Err(Error::InvalidStep { .. })));
        let key = step_key("judge", "id\0odd").unwrap();
        assert_eq!(
            item_id_of(step_prefix("judge").unwrap().len(), &key).unwrap(),
            "id\0odd"
        );
    }

    #[test]
    fn item_keys_give_back_their_id() {
        assert_eq!(item_key_id(&item_key(&[3, 7], "abc")).unwrap(), "abc");
        assert_eq!(item_key_id(&item_key(&[], "")).unwrap(), "");
        assert_eq!(item_key_id(&item_key(&[1], "é\u{1}x")).unwrap(), "é\u{1}x");
        assert!(matches!(
            item_key_id(&[ORDER_NEXT, 1, 2]),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn keys_display_readably() {
        assert_eq!(display(&step_key("s", "i").unwrap()), "s/i");
        assert_eq!(display_item(&item_key(&[3, 7], "abc")), "[3, 7]/abc");
    }
}
