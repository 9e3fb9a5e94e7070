//! Outputs never escape the project: symlinks are stored as links and never followed, paths
//! are checked after `..` is resolved, and a record naming a path outside is ignored.
//!
//! What lies outside the project is a second temp dir (or the test's temp dir, with the
//! project in `proj/` below it), so a write through a link or a bad path lands where the test
//! can see it.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use crate::support::{Output, Test, unindent};

/// A directory outside the project holding `secret.txt` (mode 0600).
fn outside() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("murphy-outside-")
        .tempdir()
        .unwrap();
    let secret = dir.path().join("secret.txt");
    fs::write(&secret, "secret\n").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    dir
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

/// The one record in the store.
fn record_path(out: &Output, state: &str) -> PathBuf {
    let dir = out.file(&format!("{state}/store/records"));
    let mut records: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    records.remove(0)
}

/// The record's JSON body (after its checksum line).
fn record_body(path: &Path) -> serde_json::Value {
    let text = fs::read_to_string(path).unwrap();
    let (_, body) = text.split_once('\n').unwrap();
    serde_json::from_str(body).unwrap()
}

/// Rewrites a record's body and its checksum line the way the store writes them.
fn rewrite_record(path: &Path, edit: impl FnOnce(&str) -> String) {
    let text = fs::read_to_string(path).unwrap();
    let (_, body) = text.split_once('\n').unwrap();
    let body = edit(body);
    let check = blake3::hash(body.as_bytes()).to_hex();
    fs::write(path, format!("{check}\n{body}")).unwrap();
}

/// Before: `ln -sfn /etc out/etcdir` with `out/**` copied what the link pointed to into the
/// store. Now the link is refused, and nothing behind it is stored.
#[test]
fn a_symlink_leaving_the_project_is_refused_and_nothing_behind_it_is_stored() {
    let outside = outside();
    let target = outside.path().display().to_string();
    let out = Test::new()
        .pipeline(&format!(
            "
            version: 1
            stages:
              build:
                run: mkdir -p out && ln -sfn {target} out/etcdir
                outputs: [\"out/**\"]
            "
        ))
        .args(["run"])
        .code(1)
        .run();
    let message = format!(
        "output `out/etcdir` is a symlink to `{target}`, outside the project; the stage must say `outside_links: true` to keep such a link"
    );
    assert!(out.stderr.contains(&message), "{}", out.stderr);
    let stats = out.cache_stats();
    assert_eq!((stats.objects, stats.records), (0, 0));
}

/// A glob below a symlink is refused by its pattern, before anything behind the link is
/// walked or read.
#[test]
fn a_glob_below_a_symlink_is_refused() {
    let outside = outside();
    let target = outside.path().display().to_string();
    let out = Test::new()
        .pipeline(&format!(
            "
            version: 1
            stages:
              build:
                run: mkdir -p out && ln -sfn {target} out/etcdir
                outputs: [\"out/etcdir/**\"]
                outside_links: true
            "
        ))
        .args(["run"])
        .code(1)
        .run();
    let message = "output `out/etcdir/**` is below the symlink `out/etcdir`";
    assert!(out.stderr.contains(message), "{}", out.stderr);
    let stats = out.cache_stats();
    assert_eq!((stats.objects, stats.records), (0, 0));
}

/// With `outside_links: true` the link is kept, as a link: the store holds no copy of what it
/// points to, and a restore makes the same link again.
#[test]
fn outside_links_keeps_a_link_out_of_the_project_as_a_link() {
    let outside = outside();
    let target = outside.path().display().to_string();
    let out = Test::new()
        .pipeline(&format!(
            "
            version: 1
            stages:
              build:
                run: echo x >> ran.build; mkdir -p out && ln -sfn {target} out/etcdir
                outputs: [\"out/**\"]
                outside_links: true
            "
        ))
        .args(["run"])
        .run();
    let stats = out.cache_stats();
    assert_eq!((stats.objects, stats.records), (0, 1));
    let record = record_body(&record_path(&out, ".murphy"));
    assert_eq!(
        record["outputs"],
        serde_json::json!([{"path": "out/etcdir", "kind": "symlink", "target": target}])
    );
    fs::remove_dir_all(out.file("out")).unwrap();
    let again = out.murphy(["run"]).run();
    assert_eq!(again.count("ran.build"), 1, "restored, not run again");
    assert_eq!(
        fs::read_link(again.file("out/etcdir")).unwrap(),
        outside.path()
    );
    assert_eq!(mode(&outside.path().join("secret.txt")), 0o600);
}

/// Before: with `out/vd -> ../victim`, the record also held `out/vd/cfg`, and a restore wrote
/// the old `cfg` into `victim/` and chmod-ed it through the link. Now the link inside the
/// project is stored as a link only, and `victim/` is never touched.
#[test]
fn a_restore_never_writes_through_a_symlinked_output() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              build:
                run: echo x >> ran.build; mkdir -p out && ln -sfn ../victim out/vd
                outputs: [\"out/**\"]
            ",
        )
        .write("victim/cfg", "old\n")
        .args(["run"])
        .run();
    let cfg = out.file("victim/cfg");
    fs::write(&cfg, "new\n").unwrap();
    fs::set_permissions(&cfg, fs::Permissions::from_mode(0o600)).unwrap();
    let again = out.murphy(["run"]).run();
    assert_eq!(again.count("ran.build"), 1, "restored, not run again");
    assert_eq!(again.read("victim/cfg"), "new\n");
    assert_eq!(mode(&cfg), 0o600);
    assert_eq!(
        again.cache_stats().objects,
        0,
        "nothing behind the link is stored"
    );
    assert_eq!(
        fs::read_link(again.file("out/vd")).unwrap(),
        Path::new("../victim")
    );
}

/// A directory above a recorded output that became a symlink is not written through: the
/// restore is refused, the stage runs instead, and its output below the link is refused too.
#[test]
fn a_restore_refuses_a_symlink_above_a_recorded_output() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              build:
                run: echo x >> ran.build; if [ ! -L out ]; then mkdir -p out && echo built > out/file; fi
                outputs: [out/file]
            ",
        )
        .args(["run"])
        .run();
    fs::remove_dir_all(out.file("out")).unwrap();
    out.write("victim/file", "mine\n");
    symlink("victim", out.file("out")).unwrap();
    let (code, again) = out.murphy(["run"]).run_unchecked();
    assert_eq!(again.read("victim/file"), "mine\n");
    assert_eq!(code, Some(1));
    assert!(
        again.stderr.contains(
            "cannot restore `out/file`: `out` is a symlink, and murphy does not write through one"
        ),
        "{}",
        again.stderr
    );
    assert!(
        again.stderr.contains(
            "output `out/file` is below the symlink `out`: murphy does not follow symlinks in outputs"
        ),
        "{}",
        again.stderr
    );
    assert_eq!(again.count("ran.build"), 2);
}

/// Before: `outputs: ["out2/../../outside.txt"]` passed `validate`, and a cached run wrote
/// outside the project. Every path is now resolved by its text and refused where written.
#[test]
fn paths_leaving_the_project_after_normalisation_are_refused_where_written() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              build:
                run: echo hi > ../outside.txt
                inputs: [\"src/../../x\"]
                outputs: [\"out2/../../outside.txt\", \"./a/../b.txt\"]
                workdir: sub/../..
              pack:
                archive: {files: [\"dist/**/../../../x\"]}
            ",
        )
        .args(["validate"])
        .code(2)
        .run();
    for expected in [
        "pipeline.yml:5:14: `src/../../x` leaves the project (its `..` parts lead out of the pipeline's directory): inputs and outputs are paths inside the pipeline's directory",
        "pipeline.yml:6:15: output `out2/../../outside.txt` is the project itself or outside it (its `..` parts lead out of the pipeline's directory): an output must be a path inside the pipeline's directory",
        "pipeline.yml:7:14: workdir `sub/../..` leaves the project (its `..` parts lead out of the pipeline's directory)",
        "pipeline.yml:9:23: `dist/**/../../../x` leaves the project (a `..` follows a glob part, which may stand for any depth): archive files are paths inside the pipeline's directory",
    ] {
        assert!(out.stderr.contains(expected), "{expected}\n{}", out.stderr);
    }
    // Those four and nothing else: `./a/../b.txt` is `b.txt`, inside.
    let places = out
        .stderr
        .lines()
        .filter(|l| l.trim_start_matches("error: ").starts_with("pipeline.yml:"));
    assert_eq!(places.count(), 4, "{}", out.stderr);
}

/// A record whose path is `../x` or absolute was not written by murphy: it is ignored with a
/// warning and the stage runs again, and nothing is written where it points.
#[test]
fn a_record_naming_a_path_outside_the_project_is_ignored_with_a_warning() {
    let elsewhere = outside();
    let absolute = elsewhere.path().join("restored.txt").display().to_string();
    for bad in ["../restored.txt", absolute.as_str()] {
        let test = Test::new().write(
            "proj/pipeline.yml",
            &unindent(
                "
                version: 1
                stages:
                  build:
                    run: echo x >> ran.build; echo built > out.txt
                    outputs: [out.txt]
                ",
            ),
        );
        let out = test.cwd("proj").args(["run"]).run();
        let record = record_path(&out, "proj/.murphy");
        rewrite_record(&record, |body| {
            body.replace("\"path\": \"out.txt\"", &format!("\"path\": \"{bad}\""))
        });
        fs::remove_file(out.file("proj/out.txt")).unwrap();
        let again = out.murphy(["run"]).cwd("proj").run();
        let target = out.file("proj").join(bad);
        assert!(!target.exists(), "{bad} was written");
        let warning = format!("is damaged (`{bad}` is not inside the project");
        assert!(again.stderr.contains(&warning), "{}", again.stderr);
        assert_eq!(again.count("proj/ran.build"), 2, "run again");
        assert_eq!(again.read("proj/out.txt"), "built\n");
    }
}

/// Archive and publish read the files they match: a symlink among them that leads out of
/// the project (`dist/s -> /etc/passwd`) would carry its bytes out, so it is refused.
#[test]
fn archive_and_publish_take_no_file_through_a_symlink_leading_out() {
    let out = Test::new()
        .pipeline(
            "
            version: 1
            stages:
              make: {run: mkdir -p dist && echo ok > dist/a.txt && ln -sfn /etc/passwd dist/s}
              pack: {needs: [make], archive: {files: ['dist/**']}}
            ",
        )
        .args(["run"])
        .code(1)
        .run();
    assert!(
        out.stderr.contains(
            "`dist/s` is a symlink to `/etc/passwd`, outside the project: the archive takes nothing from outside"
        ),
        "{}",
        out.stderr
    );
    assert!(!out.file("artifacts/000001").exists());

    out.pipeline(
        "
        version: 1
        stages:
          make: {run: mkdir -p dist && echo ok > dist/a.txt && ln -sfn /etc/passwd dist/s}
          ship:
            needs: [make]
            when: {trigger: [local]}
            publish:
              - command: {files: ['dist/*'], run: 'cat {file} >> shipped.txt'}
        ",
    );
    let shipped = out.murphy(["run"]).code(1).run();
    assert!(
        shipped.stderr.contains(
            "`dist/s` is a symlink to `/etc/passwd`, outside the project: nothing from outside is published"
        ),
        "{}",
        shipped.stderr
    );
    assert!(!out.file("shipped.txt").exists());
}
