//! Talking to the LLM: the `Inference` trait and an OpenAI-compatible client (LibertAI by default)
//! with streaming and tool calls. (Built in issue #3.)
