use super::*;
use crate::stub::protocols::Protocol;
use serde_json::json;

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn codex_request(shell_kind: &str) -> Value {
    let shell = if shell_kind == "function" {
        json!({"type": "function", "name": "exec_command", "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}})
    } else {
        json!({"type": shell_kind, "name": "exec_command", "format": {"type": "text"}})
    };
    json!({
        "model": "gpt-5", "stream": true, "tool_choice": "auto", "parallel_tool_calls": false,
        "reasoning": {"effort": "medium", "summary": "auto"}, "prompt_cache_key": "0193-abc",
        "instructions": "You are Codex, session 2026-12-06.",
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "secret prompt"}]}],
        "tools": [shell, {"type": "web_search"}]
    })
}

fn contract(requests: &[RequestShape]) -> Requests {
    let mut r = Requests::default();
    for q in requests {
        r.observe(q);
    }
    r
}

#[test]
fn a_responses_request_reduces_to_its_contract_without_the_conversation_or_secrets() {
    let h = headers(&[
        ("authorization", "Bearer sk-live"),
        ("user-agent", "codex_exec/0.163.0"),
        ("originator", "codex_exec"),
        ("session_id", "0193-abc"),
        ("x-api-key", "k"),
        ("openai-beta", "responses=experimental"),
    ]);
    let shape = RequestShape::of(
        Protocol::OpenaiResponses,
        "/v1/responses",
        &codex_request("function"),
        &h,
    );
    assert_eq!(shape.endpoint, "POST /v1/responses (openai_responses)");
    assert_eq!(shape.params["stream"], "true");
    assert_eq!(shape.params["reasoning.effort"], "medium");
    assert_eq!(
        shape.params["prompt_cache_key"], "<string>",
        "volatile values are not kept"
    );
    let ids = json!({"client_metadata": {"thread_id": "01a24cf0-80a2-75b0-ad71-87962c745de0", "window": "01a24cf0-80a2-75b0-ad71-87962c745de0:0", "mode": "exec"}});
    let p = RequestShape::of(Protocol::OpenaiResponses, "/v1/responses", &ids, &[]).params;
    assert_eq!(
        (
            p["client_metadata.thread_id"].as_str(),
            p["client_metadata.window"].as_str()
        ),
        ("<id>", "<id>")
    );
    assert_eq!(p["client_metadata.mode"], "exec");
    assert!(!shape.params.contains_key("input") && !shape.params.contains_key("instructions"));
    let kinds: Vec<(&str, &str)> = shape.tools.iter().map(|t| (t.name.as_str(), t.kind.as_str())).collect();
    assert_eq!(kinds, vec![("exec_command", "function"), ("web_search", "web_search")]);
    assert_eq!(shape.instructions.as_ref().unwrap().bytes, 34);
    let names: Vec<&str> = shape.headers.keys().map(String::as_str).collect();
    assert_eq!(names, vec!["openai-beta", "originator", "user-agent"]);
    let text = serde_json::to_string(&shape).unwrap();
    assert!(!text.contains("sk-live") && !text.contains("secret prompt") && !text.contains("0193-abc"));
}

#[test]
fn anthropic_client_tools_are_functions_and_server_tools_keep_their_type() {
    let body = json!({"model": "claude-sonnet-4-5", "stream": true, "max_tokens": 32000,
        "system": [{"type": "text", "text": "You are Claude Code."}, {"type": "text", "text": "cwd: /workspace"}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tools": [{"name": "Bash", "input_schema": {"type": "object"}}, {"type": "web_search_20250305", "name": "web_search"}]});
    let shape = RequestShape::of(Protocol::AnthropicMessages, "/v1/messages", &body, &[]);
    assert_eq!(shape.tools[0].kind, "function");
    assert_eq!(shape.tools[1].kind, "web_search_20250305");
    assert_eq!(shape.params["thinking.budget_tokens"], "1024");
    assert_eq!(
        shape.instructions.unwrap().bytes,
        "You are Claude Code.\ncwd: /workspace".len() as u64
    );
}

#[test]
fn schema_hashes_are_canonical_and_instruction_hashes_ignore_digits() {
    let a = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}});
    let b: Value = serde_json::from_str(
        r#"{"properties": {"b": {"type": "integer"}, "a": {"type": "string"}}, "type": "object"}"#,
    )
    .unwrap();
    assert_eq!(canonical_hash(&a), canonical_hash(&b));
    assert_ne!(canonical_hash(&a), canonical_hash(&json!({"type": "object"})));
    assert_eq!(
        instructions_hash("today is 2026-12-05"),
        instructions_hash("today is 2026-12-06")
    );
    assert_ne!(
        instructions_hash("today is 2026-12-05"),
        instructions_hash("today was 2026-12-05")
    );
}

#[test]
fn a_tool_that_turns_custom_is_drift_and_the_rest_is_informational() {
    let old = contract(&[RequestShape::of(
        Protocol::OpenaiResponses,
        "/v1/responses",
        &codex_request("function"),
        &[],
    )]);
    let new = contract(&[RequestShape::of(
        Protocol::OpenaiResponses,
        "/v1/responses",
        &codex_request("custom"),
        &[],
    )]);
    let changes = diff(&old, &new);
    assert_eq!(
        changes,
        vec![Change::ToolTypeChanged {
            name: "exec_command".into(),
            was: "function".into(),
            now: "custom".into()
        }]
    );
    assert!(changes[0].breaks(&old));
    assert_eq!(changes[0].class(), "tool_type_changed");
    assert_eq!(
        changes[0].to_string(),
        "sends tool exec_command as custom, was function"
    );
    assert!(diff(&old, &old).is_empty(), "a build is no change from itself");
}

#[test]
fn renames_schema_changes_params_and_headers_are_classified() {
    let mut old_body = codex_request("function");
    let h_old = headers(&[
        ("user-agent", "codex_exec/0.133.0 (Debian 12)"),
        ("anthropic-beta", "a"),
    ]);
    let h_new = headers(&[
        ("user-agent", "codex_exec/0.163.0 (Debian 12)"),
        ("anthropic-beta", "a,b"),
        ("x-client-name", "codex"),
    ]);
    let old = contract(&[RequestShape::of(
        Protocol::OpenaiResponses,
        "/v1/responses",
        &old_body,
        &h_old,
    )]);
    old_body["tools"][0]["name"] = json!("shell");
    old_body["tools"][1] = json!({"type": "function", "name": "view_image", "parameters": {"type": "object"}});
    old_body["reasoning"]["effort"] = json!("high");
    old_body.as_object_mut().unwrap().remove("parallel_tool_calls");
    old_body["store"] = json!(false);
    old_body["instructions"] = json!("A different prompt, longer than before.");
    let new = contract(&[RequestShape::of(
        Protocol::OpenaiResponses,
        "/v1/responses",
        &old_body,
        &h_new,
    )]);
    let changes = diff(&old, &new);
    let classes: Vec<String> = changes.iter().map(Change::class).collect();
    for c in [
        "tool_renamed",
        "tool_removed",
        "tool_added",
        "instructions_changed",
        "param_changed",
        "param_added",
        "param_removed",
        "header_added",
        "beta_flags_changed",
    ] {
        assert!(classes.contains(&c.to_string()), "{c} in {classes:?}");
    }
    assert!(changes.contains(&Change::BetaFlagsChanged {
        header: "anthropic-beta".into(),
        added: vec!["b".into()],
        removed: vec![],
    }));
    assert!(changes.contains(&Change::ToolRenamed {
        from: "exec_command".into(),
        to: "shell".into()
    }));
    assert!(!classes.contains(&"tool_schema_changed".to_string()));
    // Only the version moved in the user agent: not a change.
    assert!(
        !changes
            .iter()
            .any(|c| matches!(c, Change::HeaderChanged { header, .. } if header == "user-agent"))
    );
    // A new function tool, a removed web search, parameters and headers: informational.
    assert!(changes.iter().all(|c| !c.breaks(&old)), "{changes:?}");
}

#[test]
fn suite_pins_name_what_the_cli_sends() {
    let seen = contract(&[RequestShape::of(
        Protocol::OpenaiResponses,
        "/v1/responses",
        &codex_request("custom"),
        &[],
    )]);
    let pins = Expect {
        tools_include: vec!["exec_command".into(), "apply_patch".into()],
        tool_types: vec!["function".into()],
        max_instructions_bytes: Some(10),
    };
    assert_eq!(
        pins.check(&seen),
        vec![
            "does not offer tool apply_patch".to_string(),
            "sends tool exec_command as custom (allowed: function)".into(),
            "sends tool web_search as web_search (allowed: function)".into(),
            "sends 34 bytes of instructions (at most 10 allowed)".into(),
        ]
    );
    assert_eq!(
        Expect::default().check(&Requests::default()),
        vec!["the CLI sent no request to the model".to_string()]
    );
}

#[test]
fn hostile_requests_are_bounded() {
    let tools: Vec<Value> = (0..(MAX_TOOLS + 50))
        .map(|i| json!({"type": "function", "name": format!("t{i}"), "parameters": {}}))
        .collect();
    let huge = json!({"type": "object", "description": "x".repeat(MAX_SCHEMA + 1)});
    let mut body = json!({"tools": tools});
    body["tools"][0]["parameters"] = huge;
    let params: serde_json::Map<String, Value> = (0..500).map(|i| (format!("p{i}"), json!(i))).collect();
    for (k, v) in params {
        body[k] = v;
    }
    let shape = RequestShape::of(Protocol::OpenaiResponses, "/v1/responses", &body, &[]);
    assert_eq!(shape.tools.len(), MAX_TOOLS);
    assert!(
        shape.tools[0].schema.is_null(),
        "an oversized schema keeps only its hash"
    );
    assert!(shape.params.len() <= MAX_PARAMS);
    let mut r = Requests::default();
    for i in 0..40 {
        let mut s = shape.clone();
        s.params.insert("p0".into(), i.to_string());
        r.observe(&s);
    }
    assert_eq!(r.params["p0"].len(), MAX_VALUES);
    assert!(r.truncated);
}
