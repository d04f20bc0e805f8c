//! Archives (wheels) from a download → unpacked files: whatever the bytes, nothing is written
//! outside the destination, and a refused archive leaves nothing at all beside it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let home = tempfile::tempdir().unwrap();
    let dest = home.path().join("cli");
    let keep = |p: &std::path::Path| Some(p.to_path_buf());
    let limits = canary::archive::Limits {
        max_entries: 64,
        max_entry_bytes: 1 << 20,
        max_total_bytes: 4 << 20,
    };
    match canary::archive::unpack_zip(data, &dest, &keep, limits, "fuzz.whl") {
        Ok(written) => {
            for w in written {
                assert!(w.path.is_relative());
                assert!(w.path.components().all(|c| matches!(c, std::path::Component::Normal(_))));
                assert!(dest.join(&w.path).starts_with(&dest));
            }
        }
        Err(_) => {
            let left: Vec<_> = std::fs::read_dir(home.path()).unwrap().flatten().collect();
            assert!(left.is_empty(), "a refused archive left {left:?}");
        }
    }
});
