//! The wheel, member and cache mechanics on a tiny wheel made here (nothing is
//! downloaded).

use std::io::Write;
use std::path::Path;

use latentevo_assets::{
    ensure_cached, extract_pinned, sha256_bytes, sha256_file, verify_cache, write_atomically, AssetError,
    CacheProblem, Member, WheelSource, WheelSpec, MANIFEST_FILE,
};
use serde_json::json;

const DATA: &[u8] = b"pinned bytes\n";

fn make_wheel(path: &Path, members: &[(&str, &[u8])]) {
    let f = std::fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in members {
        z.start_file(*name, opts).unwrap();
        z.write_all(bytes).unwrap();
    }
    z.finish().unwrap();
}

fn spec_for(wheel: &Path) -> WheelSpec {
    WheelSpec {
        requirement: "tiny-pkg==1.0".into(),
        wheel_name: "tiny_pkg-1.0-py3-none-any.whl".into(),
        sha256: sha256_file(wheel).unwrap(),
    }
}

#[test]
fn sha256_of_a_file_matches_the_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("f");
    std::fs::write(&p, DATA).unwrap();
    assert_eq!(sha256_file(&p).unwrap(), sha256_bytes(DATA));
    assert_eq!(
        sha256_bytes(b""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let err = sha256_file(&tmp.path().join("missing")).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn cache_is_built_once_verified_and_rebuilt_when_damaged() {
    let tmp = tempfile::tempdir().unwrap();
    let wheel = tmp.path().join("tiny_pkg-1.0-py3-none-any.whl");
    make_wheel(&wheel, &[("pkg/a/data.bin", DATA), ("pkg/other", b"x")]);
    let spec = spec_for(&wheel);
    let member = Member::new("pkg/a/data.bin", DATA.len() as u64, &sha256_bytes(DATA));
    let source = WheelSource::Local(wheel.clone());
    let dir = tmp.path().join("cache").join("tiny-v1");
    let recipe = json!({"wheel": spec.sha256});
    let build = |work: &Path, stage: &Path| -> Result<(), AssetError> {
        let w = spec.fetch(&source, work, false, "hint")?;
        extract_pinned(&w, &member, &stage.join("sub").join("data.bin"))
    };
    let first = ensure_cached(&dir, &recipe, "tiny", false, build).unwrap();
    assert!(first.built);
    assert_eq!(std::fs::read(dir.join("sub/data.bin")).unwrap(), DATA);
    // Nested files are in the manifest under a `/` path.
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(MANIFEST_FILE)).unwrap()).unwrap();
    assert_eq!(manifest["files"]["sub/data.bin"]["size"], json!(DATA.len()));
    assert_eq!(manifest["recipe"], recipe);
    // Nothing but the cache directory is left in the root.
    assert_eq!(std::fs::read_dir(dir.parent().unwrap()).unwrap().count(), 1);

    let again = ensure_cached(&dir, &recipe, "tiny", false, |_: &Path, _: &Path| {
        Err::<(), AssetError>(AssetError::Unavailable("must not be called".into()))
    })
    .unwrap();
    assert!(!again.built);

    // Damaged (same size, other bytes) => detected and rebuilt.
    std::fs::write(dir.join("sub/data.bin"), b"pinned bytez\n").unwrap();
    assert!(matches!(
        verify_cache(&dir, &recipe),
        Err(CacheProblem::Damaged(_))
    ));
    assert!(ensure_cached(&dir, &recipe, "tiny", false, build).unwrap().built);
    assert_eq!(std::fs::read(dir.join("sub/data.bin")).unwrap(), DATA);
    assert_eq!(
        verify_cache(&dir, &json!({"wheel": "other"})),
        Err(CacheProblem::OtherRecipe)
    );
    assert_eq!(
        verify_cache(&tmp.path().join("nothing"), &recipe),
        Err(CacheProblem::Missing)
    );
}

#[test]
fn checksum_and_member_errors_name_the_file_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let wheel = tmp.path().join("w.whl");
    make_wheel(&wheel, &[("pkg/data.bin", DATA)]);
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let source = WheelSource::Local(wheel.clone());

    let mut bad = spec_for(&wheel);
    bad.sha256 = "0".repeat(64);
    match bad.fetch(&source, &work, false, "hint").unwrap_err() {
        AssetError::Checksum { path, expected, .. } => {
            assert_eq!(path, wheel);
            assert_eq!(expected, "0".repeat(64));
        }
        other => panic!("unexpected {other:?}"),
    }

    let dest = tmp.path().join("out.bin");
    let wrong_size = Member::new("pkg/data.bin", 99, &sha256_bytes(DATA));
    let err = extract_pinned(&wheel, &wrong_size, &dest).unwrap_err();
    assert!(matches!(err, AssetError::Checksum { .. }), "{err:?}");
    assert!(err.to_string().contains("pkg/data.bin"), "{err}");

    let absent = Member::new("pkg/absent.bin", 1, &"0".repeat(64));
    let err = extract_pinned(&wheel, &absent, &dest).unwrap_err();
    assert!(matches!(err, AssetError::Wheel { .. }), "{err:?}");
    assert!(err.to_string().contains("pkg/absent.bin"), "{err}");

    let missing = WheelSource::Local(tmp.path().join("gone.whl"));
    let err = spec_for(&wheel)
        .fetch(&missing, &work, false, "set SOME_VAR")
        .unwrap_err();
    assert!(matches!(err, AssetError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains("gone.whl") && err.to_string().contains("SOME_VAR"));

    let no_python = WheelSource::Pip {
        python: tmp.path().join("no-such-python").display().to_string(),
    };
    let err = spec_for(&wheel)
        .fetch(&no_python, &work, false, "set SOME_VAR")
        .unwrap_err();
    assert!(err.to_string().contains("tiny-pkg==1.0"), "{err}");

    // A failing build leaves neither the cache directory nor temporary siblings.
    let root = tmp.path().join("cache");
    let dir = root.join("x");
    let r = ensure_cached(&dir, &json!(1), "x", false, |_: &Path, stage: &Path| {
        std::fs::write(stage.join("partial"), b"p").unwrap();
        Err::<(), AssetError>(AssetError::Unavailable("boom".into()))
    });
    assert!(r.is_err());
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
}

#[test]
fn write_atomically_refuses_to_overwrite_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    write_atomically(&out, false, |d: &Path| {
        std::fs::write(d.join("a"), b"1").map_err(latentevo_assets::io_err(d))
    })
    .unwrap();
    let err = write_atomically(&out, false, |_: &Path| Ok::<(), AssetError>(())).unwrap_err();
    assert!(err.to_string().contains("out"), "{err}");
    write_atomically(&out, true, |d: &Path| {
        std::fs::write(d.join("b"), b"2").map_err(latentevo_assets::io_err(d))
    })
    .unwrap();
    assert!(!out.join("a").exists());
    assert_eq!(std::fs::read(out.join("b")).unwrap(), b"2");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
}

#[test]
fn wheel_source_from_env() {
    // A variable name no one sets.
    let var = "LATENTEVO_ASSETS_TEST_WHEEL_UNSET";
    assert!(matches!(
        WheelSource::from_env(var),
        WheelSource::Index { pip: Some(_), .. }
    ));
}
