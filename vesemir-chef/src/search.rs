//! Partial search of the node index: only the attributes needed, every page, each node once,
//! and each row checked against the selector.
//!
//! What each server does (goiardi 0.11.10 measured by the tests; Chef Infra Server from its
//! documented behaviour):
//!
//! | | Chef Infra Server | goiardi 0.11.10 |
//! |---|---|---|
//! | partial search `POST /search/node` | yes | yes (paths such as `["cloud", "local_ipv4"]`, top-level `name`, `chef_environment`) |
//! | row order | stable (sorted by document id) | new random order on every request |
//! | `total` | every match | the number of rows in this answer |
//! | no `rows` parameter | 1000 rows | 1000 rows |
//! | strategy here | page with `rows`/`start` until `total`; distinct names must equal `total` | one request from `start=0` with `rows` larger than any fleet |
//! | indexing | asynchronous (Solr commit) | asynchronous (a goroutine per saved object) |
//!
//! Both index asynchronously: a node saved a moment ago may not be found yet.

use std::collections::BTreeMap;

use reqwest::Method;
use serde_json::{Map, Value};
use vesemir_core::ports::{Selector, TermKind};

use crate::client::ChefClient;
use crate::config::ServerFlavor;
use crate::error::ChefError;

/// The key under which a partial search returns the address attribute.
pub(crate) const ADDRESS_KEY: &str = "vesemir_address";
/// Prefix of the keys under which extra attributes come back.
pub(crate) const EXTRA_PREFIX: &str = "vesemir_extra:";

/// The `rows` asked of goiardi: more than any fleet.
const GOIARDI_WINDOW: usize = 1_000_000;

/// One node as partial search returned it: its name and the requested attributes.
#[derive(Debug, Clone)]
pub(crate) struct NodeRow {
    pub(crate) name: String,
    pub(crate) data: Map<String, Value>,
}

/// The partial-search body: result key -> attribute path.
pub(crate) fn partial_keys(address_attribute: &str, extra_attributes: &[String]) -> Value {
    let path = |dotted: &str| Value::from(dotted.split('.').map(Value::from).collect::<Vec<_>>());
    let mut keys = Map::new();
    for name in ["name", "chef_environment", "fqdn", "ipaddress", "tags", "roles", "recipes"] {
        keys.insert(name.to_owned(), path(name));
    }
    keys.insert(ADDRESS_KEY.to_owned(), path(address_attribute));
    for extra in extra_attributes {
        keys.insert(format!("{EXTRA_PREFIX}{extra}"), path(extra));
    }
    Value::Object(keys)
}

/// Every node matching `query`, each exactly once, sorted by name.
pub(crate) async fn search_nodes(
    client: &ChefClient,
    flavor: ServerFlavor,
    page_size: usize,
    query: &str,
    keys: &Value,
) -> Result<Vec<NodeRow>, ChefError> {
    match flavor {
        ServerFlavor::Goiardi | ServerFlavor::Auto => {
            // goiardi 0.11.10 (measured): rows come in a different order on every request and
            // `total` is the number of rows in the answer, so paging with `start` skips and
            // repeats nodes, and an absent `rows` means 1000. One request from `start=0` with
            // a `rows` larger than any fleet answers every match (measured by the bench: a
            // 1000-row answer costs goiardi more than half of what a 10,000-row one does, so one large
            // window is also the fastest); an answer that fills the window would mean more
            // matches than it could hold.
            let page = fetch_page(client, query, Some((GOIARDI_WINDOW, 0)), keys).await?;
            let fetched = page.rows.len();
            if page.total > fetched {
                // Not goiardi's behaviour: a server that caps `rows` (Chef Infra Server) and
                // reports more matches than it answered. Refuse rather than answer a subset.
                return Err(ChefError::Inconsistent(format!(
                    "the server reported {} matching nodes but answered {fetched}; if it is Chef Infra \
                     Server, set the server flavor to `chef-infra` or `auto`",
                    page.total
                )));
            }
            if fetched >= GOIARDI_WINDOW {
                return Err(ChefError::Inconsistent(format!(
                    "{fetched} or more nodes match {query:?}, more than one goiardi answer can hold: narrow the selector"
                )));
            }
            let unique = dedup(page.rows);
            if unique.len() != fetched {
                tracing::debug!(fetched, unique = unique.len(), "goiardi answered a node twice");
            }
            Ok(unique.into_values().collect())
        }
        ServerFlavor::ChefInfra => {
            // Chef Infra Server sorts rows stably (by document id) and reports the number of
            // matches as `total`: page until every row is seen. If the index changes while
            // paging, the count of distinct names will not equal `total`: search again once.
            let mut last_error = None;
            for _ in 0..2 {
                let mut rows = Vec::new();
                let mut start = 0usize;
                let total = loop {
                    let page = fetch_page(client, query, Some((page_size, start)), keys).await?;
                    if page.goiardi {
                        // Paging goiardi would silently miss nodes: refuse rather than answer a subset.
                        return Err(ChefError::Inconsistent(
                            "the server is goiardi but the adapter is configured for Chef Infra Server; \
                             set the server flavor to `goiardi` or `auto`"
                                .into(),
                        ));
                    }
                    let fetched = page.rows.len();
                    rows.extend(page.rows);
                    start += fetched;
                    if fetched == 0 || start >= page.total {
                        break page.total;
                    }
                };
                let unique = dedup(rows);
                if unique.len() == total {
                    return Ok(unique.into_values().collect());
                }
                last_error = Some(ChefError::Inconsistent(format!(
                    "the server reported {total} matching nodes but paging returned {} distinct ones; \
                     the index may have changed during the search",
                    unique.len()
                )));
            }
            Err(last_error.unwrap_or_else(|| ChefError::Inconsistent("no search was made".into())))
        }
    }
}

struct Page {
    rows: Vec<NodeRow>,
    total: usize,
    goiardi: bool,
}

async fn fetch_page(
    client: &ChefClient,
    query: &str,
    window: Option<(usize, usize)>,
    keys: &Value,
) -> Result<Page, ChefError> {
    let rows_text;
    let start_text;
    let mut params = vec![("q", query)];
    if let Some((rows, start)) = window {
        rows_text = rows.to_string();
        start_text = start.to_string();
        params.push(("rows", &rows_text));
        params.push(("start", &start_text));
    }
    let url = client.url("/search/node", &[]).to_string();
    let answer = client.call_answer(Method::POST, "/search/node", &params, Some(keys)).await?;
    let goiardi = answer.goiardi;
    let answer = answer.body;
    let decode = |reason: &str| ChefError::Decode { url: url.clone(), reason: reason.to_owned() };
    let total = answer
        .get("total")
        .and_then(Value::as_u64)
        .ok_or_else(|| decode("no `total` in the search answer"))?;
    let raw_rows = answer
        .get("rows")
        .and_then(Value::as_array)
        .ok_or_else(|| decode("no `rows` in the search answer"))?;
    let mut rows = Vec::with_capacity(raw_rows.len());
    for row in raw_rows {
        let data = row.get("data").and_then(Value::as_object).cloned().unwrap_or_default();
        let name = match data.get("name").and_then(Value::as_str) {
            Some(name) => name.to_owned(),
            None => row
                .get("url")
                .and_then(Value::as_str)
                .and_then(|u| u.rsplit('/').next())
                .map(str::to_owned)
                .ok_or_else(|| decode("a search row has neither a name nor a url"))?,
        };
        rows.push(NodeRow { name, data });
    }
    Ok(Page { rows, total: usize::try_from(total).unwrap_or(usize::MAX), goiardi })
}

/// Rows by name, each name once (the first row seen wins).
fn dedup(rows: Vec<NodeRow>) -> BTreeMap<String, NodeRow> {
    let mut unique: BTreeMap<String, NodeRow> = BTreeMap::new();
    for row in rows {
        unique.entry(row.name.clone()).or_insert(row);
    }
    unique
}

/// Whether a row satisfies every term of the selector exactly (a raw query is the server's
/// business alone).
pub(crate) fn row_matches(row: &NodeRow, selector: &Selector) -> bool {
    if selector.raw_query.is_some() {
        return true;
    }
    let list = |key: &str| -> Vec<&str> {
        row.data
            .get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    };
    let has = |kind, term: &str| {
        let key = match kind {
            TermKind::Tag => "tags",
            TermKind::Role => "roles",
            TermKind::Recipe => "recipes",
        };
        list(key).contains(&term)
    };
    selector.matches(has, row.data.get("chef_environment").and_then(Value::as_str))
}
