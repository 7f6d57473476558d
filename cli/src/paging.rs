//! Pages of a list endpoint: fetching one or following `next_page_token` to the end
//! (`--all`), then either parsing them into one typed answer (the shared
//! `finwait_vocab::answer` types) or, for `--json`, merging their bodies into one
//! object of the same shape.

use std::collections::HashSet;

use finwait_vocab::answer::{GroupsPage, HostsPage, LeaksPage, SocketsPage, TimelinePage, WhoPage};
use finwait_vocab::report::ReportsPage;
use hyper::body::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::client::Client;
use crate::error::Error;
use crate::url::Query;

/// A page of a list endpoint.
pub trait Page: DeserializeOwned {
    /// The endpoint path under the server URL.
    const PATH: &'static str;
    /// The key of the list that pages split (`leaks`, `sockets`, …).
    const LIST: &'static str;
    /// The token of the next page; `None` on the last.
    fn next_page_token(&self) -> Option<&str>;
    /// Appends a later page's items; the next page token becomes the later one's.
    fn append(&mut self, later: Self);
}

macro_rules! page {
    ($ty:ty, $path:literal, $list:ident) => {
        impl Page for $ty {
            const PATH: &'static str = $path;
            const LIST: &'static str = stringify!($list);
            fn next_page_token(&self) -> Option<&str> {
                self.next_page_token.as_deref().filter(|t| !t.is_empty())
            }
            fn append(&mut self, later: Self) {
                self.$list.extend(later.$list);
                self.next_page_token = later.next_page_token;
            }
        }
    };
}

page!(HostsPage, "/api/v1/hosts", hosts);
page!(SocketsPage, "/api/v1/sockets", sockets);
// TIME_WAIT pressure is not paged: the first page's list is kept.
page!(LeaksPage, "/api/v1/leaks", leaks);
page!(GroupsPage, "/api/v1/leaks/groups", groups);
page!(WhoPage, "/api/v1/who", connections);
page!(TimelinePage, "/api/v1/timeline", points);
page!(ReportsPage, "/api/v1/reports", reports);

/// Bodies of the pages fetched, in order.
#[derive(Debug)]
pub struct Pages {
    /// Raw bodies as received.
    pub bodies: Vec<Bytes>,
    /// True when the server has more pages that were not fetched (no `--all`).
    pub more: bool,
}

#[derive(Deserialize)]
struct NextToken {
    #[serde(default)]
    next_page_token: Option<String>,
}

/// The `next_page_token` of a body, `None` on the last page (null, absent or empty).
fn next_token(body: &[u8]) -> Result<Option<String>, String> {
    let t: NextToken = serde_json::from_slice(body)
        .map_err(|e| format!("not a JSON object as the contract says ({e})"))?;
    Ok(t.next_page_token.filter(|t| !t.is_empty()))
}

/// GETs `path` with `query`, and with `follow` every further page.
pub async fn fetch(
    client: &Client,
    path: &'static str,
    query: &Query,
    follow: bool,
) -> Result<Pages, Error> {
    let mut bodies = Vec::new();
    let mut token: Option<String> = None;
    let mut seen = HashSet::new();
    loop {
        let mut q = query.clone();
        q.push_opt("page_token", token.as_deref());
        let body = client.get(path, &q).await?;
        let next = next_token(&body).map_err(|reason| Error::BadResponse {
            server: client.server().to_string(),
            path: path.to_string(),
            reason,
        })?;
        bodies.push(body);
        match next {
            None => {
                return Ok(Pages {
                    bodies,
                    more: false,
                });
            }
            Some(_) if !follow => return Ok(Pages { bodies, more: true }),
            Some(t) => {
                if !seen.insert(t.clone()) {
                    return Err(Error::BadResponse {
                        server: client.server().to_string(),
                        path: path.to_string(),
                        reason: "the server repeated a page token; stopping instead of looping"
                            .into(),
                    });
                }
                token = Some(t);
            }
        }
    }
}

/// Parses every page and joins them into one answer.
pub fn parse<P: Page>(pages: &Pages, server: &str) -> Result<P, Error> {
    let mut merged: Option<P> = None;
    for body in &pages.bodies {
        let page: P = serde_json::from_slice(body).map_err(|e| Error::BadResponse {
            server: server.to_string(),
            path: P::PATH.to_string(),
            reason: format!("does not match the contract ({e})"),
        })?;
        match &mut merged {
            None => merged = Some(page),
            Some(m) => m.append(page),
        }
    }
    merged.ok_or_else(|| Error::BadResponse {
        server: server.to_string(),
        path: P::PATH.to_string(),
        reason: "no page received".into(),
    })
}

/// What `--json` prints: a single page byte for byte; several pages (`--all`) as the
/// first page's object with the `list` arrays of every page concatenated and
/// `next_page_token` null, re-serialized compactly (keys then in alphabetical order).
pub fn json_output(pages: &Pages, list: &str) -> Result<Vec<u8>, String> {
    match pages.bodies.as_slice() {
        [] => Err("no page received".into()),
        [only] => Ok(only.to_vec()),
        [first, rest @ ..] => {
            let mut merged: Value = serde_json::from_slice(first).map_err(|e| e.to_string())?;
            let mut items = take_list(&mut merged, list)?;
            for body in rest {
                let mut page: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
                items.extend(take_list(&mut page, list)?);
            }
            let Some(obj) = merged.as_object_mut() else {
                return Err("the answer is not a JSON object".into());
            };
            obj.insert(list.to_string(), Value::Array(items));
            obj.insert("next_page_token".into(), Value::Null);
            serde_json::to_vec(&merged).map_err(|e| e.to_string())
        }
    }
}

fn take_list(page: &mut Value, list: &str) -> Result<Vec<Value>, String> {
    match page.get_mut(list).map(Value::take) {
        Some(Value::Array(items)) => Ok(items),
        Some(Value::Null) | None => Ok(Vec::new()),
        Some(_) => Err(format!("`{list}` is not an array")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{host, json};

    fn pages(bodies: &[&str]) -> Pages {
        Pages {
            bodies: bodies
                .iter()
                .map(|b| Bytes::copy_from_slice(b.as_bytes()))
                .collect(),
            more: false,
        }
    }

    #[test]
    fn tokens_are_read_and_empty_means_last() {
        assert_eq!(
            next_token(br#"{"leaks":[],"next_page_token":"abc"}"#),
            Ok(Some("abc".into()))
        );
        assert_eq!(
            next_token(br#"{"leaks":[],"next_page_token":null}"#),
            Ok(None)
        );
        assert_eq!(
            next_token(br#"{"leaks":[],"next_page_token":""}"#),
            Ok(None)
        );
        assert_eq!(next_token(br#"{"leaks":[]}"#), Ok(None));
        assert!(next_token(b"<html>").is_err());
    }

    #[test]
    fn one_page_is_printed_byte_for_byte() {
        let body = "{ \"leaks\" : [ ],\n \"next_page_token\": null }";
        assert_eq!(
            json_output(&pages(&[body]), "leaks"),
            Ok(body.as_bytes().to_vec())
        );
    }

    #[test]
    fn several_pages_merge_into_one_object_of_the_same_shape() {
        let out = json_output(
            &pages(&[
                r#"{"leaks":[{"kind":"close_wait"}],"time_wait_pressure":[],"next_page_token":"p2"}"#,
                r#"{"leaks":[{"kind":"nat"},{"kind":"x"}],"time_wait_pressure":[],"next_page_token":"p3"}"#,
                r#"{"leaks":[],"time_wait_pressure":[],"next_page_token":null}"#,
            ]),
            "leaks",
        )
        .expect("mergeable");
        let v: Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["leaks"].as_array().map(Vec::len), Some(3));
        assert_eq!(v["next_page_token"], Value::Null);
        assert_eq!(v["time_wait_pressure"], serde_json::json!([]));
    }

    #[test]
    fn typed_pages_are_appended_in_order() {
        let page = |hosts: &[&str], next: Option<&str>| {
            json(&HostsPage {
                hosts: hosts.iter().map(|h| host(h)).collect(),
                next_page_token: next.map(String::from),
            })
        };
        let p = pages(&[&page(&["a", "b"], Some("p2")), &page(&["c"], None)]);
        let merged: HostsPage = parse(&p, "http://x").expect("valid");
        let names: Vec<&str> = merged.hosts.iter().map(|h| h.hostname.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert!(merged.next_page_token.is_none());
        let bad = pages(&[r#"{"leaks": 3}"#]);
        assert!(parse::<LeaksPage>(&bad, "http://x").is_err());
    }
}
