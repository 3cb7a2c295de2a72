//! The `bash` tool.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{Shared, Tool, ToolContext, ToolOutput, error_output};

pub(crate) struct Bash {
    #[allow(dead_code)]
    shared: Arc<Shared>,
}

impl Bash {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Bash { shared }
    }
}

#[async_trait]
impl Tool for Bash {
    fn name(&self) -> &'static str {
        "bash"
    }
    fn description(&self) -> &'static str {
        "Run a bash command in the workspace and return its output and exit code."
    }
    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "command": {"type": "string", "description": "The bash command to run"},
                "timeout": {"type": "integer", "description": "Timeout in seconds (default 60, max 300)"}
            },
            "required": ["command"]
        })
    }
    async fn call(&self, _args: Value, _ctx: &ToolContext) -> ToolOutput {
        error_output("bash is not available yet")
    }
}
