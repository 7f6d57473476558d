//! Elements of the current page and what a test does with them.

use anyhow::{Result, bail};
use serde_json::{Value, json};

use super::{Browser, string};

/// An element of the current page, found by a CSS selector.
#[derive(Debug)]
pub struct Element<'b> {
    pub(super) browser: &'b Browser,
    pub(super) id: String,
}

impl Element<'_> {
    fn cmd(&self, method: &str, what: &str, body: Option<&Value>) -> Result<Value> {
        let path = format!("/element/{}{what}", self.id);
        self.browser.cmd(method, &path, body)
    }

    /// The element's rendered text.
    pub fn text(&self) -> Result<String> {
        string(self.cmd("GET", "/text", None)?)
    }

    /// An attribute as the markup (or a script) set it, or `None`. What was typed into
    /// a field is its `value` [property](Element::property), not its attribute.
    pub fn attr(&self, name: &str) -> Result<Option<String>> {
        match self.cmd("GET", &format!("/attribute/{}", checked_name(name)?), None)? {
            Value::Null => Ok(None),
            v => string(v).map(Some),
        }
    }

    /// A live DOM property (`value`, `checked`, ...), `null` when it is not set.
    pub fn property(&self, name: &str) -> Result<Value> {
        self.cmd("GET", &format!("/property/{}", checked_name(name)?), None)
    }

    /// Clicks it, waiting for a navigation it starts to load.
    pub fn click(&self) -> Result<()> {
        self.cmd("POST", "/click", Some(&json!({})))?;
        Ok(())
    }

    /// Types `text` into it.
    pub fn send_keys(&self, text: &str) -> Result<()> {
        self.cmd("POST", "/value", Some(&json!({"text": text})))?;
        Ok(())
    }
}

/// `name` if it can go into a command's path as it is.
fn checked_name(name: &str) -> Result<&str> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_:.".contains(&c))
    {
        bail!("{name:?} is not an attribute or property name");
    }
    Ok(name)
}
