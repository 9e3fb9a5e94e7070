//! `murphy init`: a starting `pipeline.yml` for the project it finds, checked before it is
//! written, and never written over an existing file.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::config;
use crate::plan::Plan;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("`{}` already exists; murphy init never overwrites a pipeline", .0.display())]
    Exists(PathBuf),
    #[error("cannot write `{}`", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A template that does not validate is murphy's bug; it is never written.
    #[error("the {kind} template does not validate (a bug in murphy): {message}")]
    Template { kind: &'static str, message: String },
}

/// What kind of project a directory holds, by the file that says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Rust,
    Python,
    Node,
    Unknown,
}

impl Kind {
    pub fn detect(dir: &Path) -> Kind {
        if dir.join("Cargo.toml").is_file() {
            Kind::Rust
        } else if dir.join("pyproject.toml").is_file() {
            Kind::Python
        } else if dir.join("package.json").is_file() {
            Kind::Node
        } else {
            Kind::Unknown
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Kind::Rust => "a Rust project (Cargo.toml)",
            Kind::Python => "a Python project (pyproject.toml)",
            Kind::Node => "a Node project (package.json)",
            Kind::Unknown => "an unrecognised project (a commented skeleton)",
        }
    }

    /// The pipeline for the project in `dir`: inputs list only what the project has, so a
    /// run warns about no pattern it wrote itself.
    fn template(self, dir: &Path) -> String {
        let inputs = |candidates: &[&str]| present(dir, candidates);
        match self {
            Kind::Rust => {
                // An untracked `Cargo.lock` is cargo's to rewrite (a library's usually is): as
                // an input it would change under the stages that read it.
                let lock = if tracked_by_git(dir, "Cargo.lock") {
                    "Cargo.lock"
                } else {
                    ""
                };
                let config = [
                    "Cargo.toml",
                    lock,
                    ".cargo/config.toml",
                    "rust-toolchain.toml",
                ];
                let targets = [
                    "build.rs",
                    "src/**",
                    "tests/**",
                    "benches/**",
                    "examples/**",
                ];
                RUST.replace(
                    "{fmt}",
                    &inputs(&[
                        "Cargo.toml",
                        "rustfmt.toml",
                        ".rustfmt.toml",
                        "build.rs",
                        "src/**/*.rs",
                        "tests/**/*.rs",
                        "benches/**/*.rs",
                        "examples/**/*.rs",
                    ]),
                )
                .replace(
                    "{clippy}",
                    &inputs(&[&config[..], &["clippy.toml"], &targets[..]].concat()),
                )
                .replace("{build}", &inputs(&[&config[..], &targets[..2]].concat()))
                .replace("{test}", &inputs(&[&config[..], &targets[..]].concat()))
            }
            Kind::Python => {
                let code = if dir.join("src").is_dir() {
                    "src/**/*.py"
                } else {
                    "**/*.py"
                };
                let project = ["pyproject.toml", "setup.py", "setup.cfg"];
                let checks = if dir.join(".pre-commit-config.yaml").is_file() {
                    PRE_COMMIT.replace(
                        "{inputs}",
                        &inputs(
                            &[
                                &[".pre-commit-config.yaml"],
                                &project[..],
                                &[code, "tests/**/*.py"],
                            ]
                            .concat(),
                        ),
                    )
                } else {
                    String::new()
                };
                PYTHON
                    .replace("{pre-commit}", &checks)
                    .replace(
                        "{build-needs}",
                        if checks.is_empty() {
                            ""
                        } else {
                            "\n    needs: [pre-commit]"
                        },
                    )
                    .replace(
                        "{build}",
                        &inputs(
                            &[
                                &project[..],
                                &[
                                    if code == "**/*.py" { code } else { "src/**" },
                                    "MANIFEST.in",
                                ],
                            ]
                            .concat(),
                        ),
                    )
                    .replace(
                        "{test}",
                        &inputs(&[&project[..], &[code, "tests/**/*.py", "conftest.py"]].concat()),
                    )
            }
            Kind::Node => NODE.to_owned(),
            Kind::Unknown => SKELETON.to_owned(),
        }
    }
}

/// The `candidates` that name something in `dir` (a file, or a glob whose folder exists), as
/// a YAML list wrapped under `inputs:`.
fn present(dir: &Path, candidates: &[&str]) -> String {
    let kept = candidates.iter().filter(|c| {
        if c.is_empty() {
            return false;
        }
        let literal: Vec<&str> = c
            .split('/')
            .take_while(|part| !crate::inputs::is_glob(part))
            .collect();
        if literal.len() == c.split('/').count() {
            return dir.join(c).exists();
        }
        // A glob from the top (`**/*.py`) is kept: the project is there.
        literal.is_empty() || dir.join(literal.join("/")).is_dir()
    });
    let mut text = String::from("[");
    let mut width = 0;
    for (i, item) in kept.enumerate() {
        let quoted = format!("\"{item}\"");
        if i > 0 {
            if width + quoted.len() > 70 {
                text.push_str(",\n             ");
                width = 0;
            } else {
                text.push_str(", ");
            }
        }
        width += quoted.len() + 2;
        text.push_str(&quoted);
    }
    text.push(']');
    text
}

/// Whether git tracks `name` in `dir` (it is in the index of the repository holding `dir`).
fn tracked_by_git(dir: &Path, name: &str) -> bool {
    let Some(repo) = crate::git::open(dir) else {
        return false;
    };
    let (Some(workdir), Ok(dir)) = (repo.workdir(), dir.canonicalize()) else {
        return false;
    };
    let Ok(workdir) = workdir.canonicalize() else {
        return false;
    };
    let Ok(relative) = dir.join(name).strip_prefix(&workdir).map(Path::to_path_buf) else {
        return false;
    };
    repo.index()
        .is_ok_and(|index| index.get_path(&relative, 0).is_some())
}

/// Writes the pipeline for the project in `path`'s directory; returns its stage count.
pub fn init(path: &Path) -> Result<(Kind, usize), InitError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let kind = Kind::detect(dir);
    let text = kind.template(dir);
    let invalid = |message: String| InitError::Template {
        kind: kind.describe(),
        message,
    };
    let source = config::parse(path, text.clone()).map_err(|e| invalid(e.to_string()))?;
    let plan =
        Plan::new(crate::include::Pipeline::single(source)).map_err(|e| invalid(e.to_string()))?;
    // `create_new`: a file that appeared since we looked is not overwritten either.
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(InitError::Exists(path.to_owned()));
        }
        Err(source) => {
            return Err(InitError::Write {
                path: path.to_owned(),
                source,
            });
        }
    };
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all());
    written.map_err(|source| InitError::Write {
        path: path.to_owned(),
        source,
    })?;
    Ok((kind, plan.stages.len()))
}

const RUST: &str = r#"# murphy pipeline for a Rust project, written by `murphy init`; edit freely.
# Stages with `inputs` are skipped while those files are unchanged. Only files this project
# has are listed: add any it gains (a `build.rs`, `benches/`) and any other file your code
# reads at build time (`include_str!`, a README used for doc tests).
version: 1
# Outer variables cargo reads; their values are part of every stage's fingerprint.
pass_env: [CARGO_HOME, RUSTUP_HOME, RUSTUP_TOOLCHAIN, RUSTFLAGS, CARGO_TARGET_DIR]

stages:
  fmt:
    run: cargo fmt --all --check
    inputs: {fmt}
  clippy:
    run: cargo clippy --all-targets -- -D warnings
    inputs: {clippy}
  build:
    needs: [fmt]
    run: cargo build --release
    inputs: {build}
    timeout: 30m
  test:
    needs: [build]
    run: cargo test
    inputs: {test}
    timeout: 30m
"#;

const PYTHON: &str = r#"# murphy pipeline for a Python project, written by `murphy init`; edit freely.
# A release is pushing a tag: `publish` runs only on tag runs. Only files this project has
# are listed as inputs: add any it gains.
version: 1

stages:{pre-commit}
  build:{build-needs}
    run: python -m build
    inputs: {build}
    outputs: [dist]
  test:
    needs: [build]
    run: python -m pytest
    inputs: {test}
  publish:
    needs: [build]
    requires: [test]
    secrets: [PYPI_TOKEN]
    publish:
      - pypi: {files: ["dist/*.whl", "dist/*.tar.gz"], password: PYPI_TOKEN}
"#;

/// The Python template's first stage, where the project has a pre-commit configuration.
const PRE_COMMIT: &str = r#"
  pre-commit:
    run: pre-commit run --all-files
    inputs: {inputs}"#;

const NODE: &str = r#"# murphy pipeline for a Node project, written by `murphy init`; edit freely.
version: 1

stages:
  install:
    run: npm ci
    # node_modules is too big to checkpoint: install runs every time.
    cache: false
  lint:
    needs: [install]
    run: npm run lint --if-present
    inputs: ["package.json", "package-lock.json", "src/**/*", "test/**/*"]
  test:
    needs: [install]
    run: npm test
    inputs: ["package.json", "package-lock.json", "src/**/*", "test/**/*"]
"#;

const SKELETON: &str = r#"# murphy pipeline, written by `murphy init`. No Cargo.toml, pyproject.toml or
# package.json was found, so this is a skeleton: replace the commands with yours.
# `murphy schema > pipeline.schema.json` gives editors completion for this file.
version: 1

stages:
  check:
    run: echo "lint and unit checks go here"
    # inputs: ["src/**/*"]          # files this stage reads: unchanged, it is skipped
  build:
    needs: [check]
    run: echo "build goes here"
    # outputs: [dist]               # what it makes: checkpointed and restored
  # test:
  #   needs: [build]
  #   run: ["make test", "make integration-test"]
  #   timeout: 20m
  #   retry: {attempts: 2, delay: 5s}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_validates() {
        let dir = tempfile::tempdir().unwrap();
        let texts = [Kind::Rust, Kind::Python, Kind::Node, Kind::Unknown]
            .map(|kind| kind.template(dir.path()))
            .into_iter()
            .chain(full_projects());
        for text in texts {
            let source = config::parse(Path::new("pipeline.yml"), text.clone())
                .unwrap_or_else(|e| panic!("{text}: {e}"));
            Plan::new(crate::include::Pipeline::single(source))
                .unwrap_or_else(|e| panic!("{text}: {e}"));
        }
    }

    /// The templates of projects that have every file they can list.
    fn full_projects() -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        for file in [
            "build.rs",
            "src/lib.rs",
            "tests/t.rs",
            "benches/b.rs",
            "examples/e.rs",
            ".pre-commit-config.yaml",
            "tests/test_a.py",
            "src/a.py",
        ] {
            let path = dir.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "").unwrap();
        }
        vec![
            Kind::Rust.template(dir.path()),
            Kind::Python.template(dir.path()),
        ]
    }

    #[test]
    fn inputs_list_what_the_project_has() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("build.rs"), "").unwrap();
        assert_eq!(
            present(
                dir.path(),
                &[
                    "Cargo.toml",
                    "build.rs",
                    "src/**",
                    "benches/**",
                    "",
                    "**/*.py"
                ]
            ),
            r#"["build.rs", "src/**", "**/*.py"]"#
        );
        let python = Kind::Python.template(dir.path());
        assert!(!python.contains("pre-commit:"), "{python}");
        assert!(python.contains("inputs: [\"src/**/*.py\"]"), "{python}");
    }

    #[test]
    fn an_existing_pipeline_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Cargo.toml"), "[package]\n").unwrap();
        let path = dir.path().join("pipeline.yml");
        assert_eq!(init(&path).unwrap(), (Kind::Rust, 4));
        std::fs::write(&path, "mine\n").unwrap();
        assert!(matches!(init(&path), Err(InitError::Exists(_))));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "mine\n");
    }
}
