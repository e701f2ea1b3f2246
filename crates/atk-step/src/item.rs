//! [`Item`]: what pipeline code and tests see of an item — its id, its parent and its fields
//! (each step's result under its key) — without the store's record layout.

use atk_state::{FieldError, Fields, ItemRecord, RECORD_VERSION};
use ref_cast::RefCast;
use serde_json::Value;

/// An item as a step, a validator, a mock reply or a dataset writer sees it: an id, the parent
/// it was split from (if any) and its fields. Build one in a test with [`Item::new`] and
/// [`Item::with`]; read fields with [`get`](Self::get) / [`text`](Self::text), whose errors name
/// the key and the keys present.
///
/// ```
/// use atk_step::Item;
/// let item = Item::new("c1").with("text", "Salt keeps.").with("judge", serde_json::json!({"keep": true}));
/// assert_eq!(item.text("text").unwrap(), "Salt keeps.");
/// assert_eq!(item.path("judge.keep"), Some(&serde_json::json!(true)));
/// assert_eq!(item.get::<bool>("judge.keep").unwrap(), true);
/// assert!(item.text("judge.nope").unwrap_err().to_string().contains("judge.nope"));
/// ```
#[derive(Debug, Clone, PartialEq, RefCast)]
#[repr(transparent)]
pub struct Item(ItemRecord);

impl Item {
    /// A root item with this id and no fields.
    pub fn new(id: impl Into<String>) -> Self {
        Self(ItemRecord {
            v: RECORD_VERSION,
            id: id.into(),
            parent: None,
            order: vec![0],
            fields: Fields::new(),
        })
    }

    /// The item with field `key` set to `value`.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.set(key, value);
        self
    }

    /// Sets field `key` (an input processor's way to add what its prompt needs).
    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.0.fields.insert(key.to_string(), value.into());
    }

    /// The item's stable id (a chunk's content hash, or derived from its parent's).
    pub fn id(&self) -> &str {
        &self.0.id
    }

    /// The id of the item this one was split from by a fan-out.
    pub fn parent(&self) -> Option<&str> {
        self.0.parent.as_deref()
    }

    /// Every field, by name.
    pub fn fields(&self) -> &Fields {
        &self.0.fields
    }

    /// Field `key` (or a dotted path inside one, `key.field`) decoded as `T`; the error names
    /// the key, the item and the keys present.
    pub fn get<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<T, FieldError> {
        match self.dotted(key)? {
            Some(value) => T::deserialize(value).map_err(|e| FieldError {
                item: self.0.id.clone(),
                problem: format!("`{key}` is not the shape asked for: {e}"),
            }),
            None => self.0.get(key),
        }
    }

    /// Field `key` (or a dotted path inside one, `key.field`) as text (a string as it is, any
    /// other value as JSON).
    pub fn text(&self, key: &str) -> Result<String, FieldError> {
        match self.dotted(key)? {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Ok(other.to_string()),
            None => self.0.text(key),
        }
    }

    /// The value at a dotted path that is not itself a field name (`None`: read `key` as a field).
    fn dotted(&self, key: &str) -> Result<Option<&Value>, FieldError> {
        if !key.contains('.') || self.0.fields.contains_key(key) {
            return Ok(None);
        }
        self.path(key).map(Some).ok_or_else(|| {
            let mut present: Vec<&str> = self.0.fields.keys().map(String::as_str).collect();
            present.sort_unstable();
            FieldError {
                item: self.0.id.clone(),
                problem: format!(
                    "no value at `{key}` (fields present: {})",
                    present.join(", ")
                ),
            }
        })
    }

    /// The value at a dotted path: `key`, `key.field`, `key.list.0` (what `{key.field}` in a
    /// prompt reads).
    pub fn path(&self, path: &str) -> Option<&Value> {
        lookup_path(&self.0.fields, path)
    }

    /// The view of a stored record (no copy).
    pub fn of(record: &ItemRecord) -> &Item {
        Item::ref_cast(record)
    }

    /// The view owning a stored record.
    pub fn from_record(record: ItemRecord) -> Self {
        Self(record)
    }

    /// The stored record behind the view.
    pub fn record(&self) -> &ItemRecord {
        &self.0
    }

    /// The stored record, owned.
    pub fn into_record(self) -> ItemRecord {
        self.0
    }
}

/// The value at a dotted path in `fields`: the first segment is a field, each next one an
/// object key or an array index.
pub(crate) fn lookup_path<'a>(fields: &'a Fields, path: &str) -> Option<&'a Value> {
    let mut segments = path.split('.');
    let mut value = fields.get(segments.next()?)?;
    for segment in segments {
        value = match value {
            Value::Object(map) => map.get(segment)?,
            Value::Array(list) => list.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}
