//! `web_fetch` and `web_search`.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{Shared, Tool, ToolContext, ToolOutput, error_output};

pub(crate) struct WebFetch {
    #[allow(dead_code)]
    shared: Arc<Shared>,
}

impl WebFetch {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        WebFetch { shared }
    }
}

#[async_trait]
impl Tool for WebFetch {
    fn name(&self) -> &'static str {
        "web_fetch"
    }
    fn description(&self) -> &'static str {
        "Fetch a public web page or API over http(s) and return it as readable text."
    }
    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {"url": {"type": "string", "description": "The http:// or https:// URL"}},
            "required": ["url"]
        })
    }
    async fn call(&self, _args: Value, _ctx: &ToolContext) -> ToolOutput {
        error_output("web_fetch is not available yet")
    }
}

pub(crate) struct WebSearch {
    #[allow(dead_code)]
    shared: Arc<Shared>,
}

impl WebSearch {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        WebSearch { shared }
    }
}

#[async_trait]
impl Tool for WebSearch {
    fn name(&self) -> &'static str {
        "web_search"
    }
    fn description(&self) -> &'static str {
        "Search the web (Brave Search) and return titles, URLs and descriptions."
    }
    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "The search query"},
                "count": {"type": "integer", "description": "Number of results, 1-10 (default 5)"}
            },
            "required": ["query"]
        })
    }
    async fn call(&self, _args: Value, _ctx: &ToolContext) -> ToolOutput {
        error_output("web_search is not available yet")
    }
}
