//! A CLI's stdout stream → Runner Contract events, through each adapter's line parser. The
//! first byte picks the adapter; the rest is the stream.
#![no_main]
use canary::runner::adapters::{Adapter, SessionInfo, claude::Claude, codex::Codex, gemini::Gemini, replay};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((pick, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let info = SessionInfo {
        runner_version: "0.1.0".into(),
        provider_version: "1.0.0".into(),
        model: "stub".into(),
    };
    let mut adapter: Box<dyn Adapter> = match pick % 3 {
        0 => Box::new(Codex::new(info)),
        1 => Box::new(Claude::new(info)),
        _ => Box::new(Gemini::new(info)),
    };
    let exit = if pick & 0x80 == 0 { Some(0) } else { Some(1) };
    let events = replay(adapter.as_mut(), text, exit);
    for e in &events {
        let _ = serde_json::to_string(e);
    }
});
