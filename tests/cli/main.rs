//! Integration tests: the real `murphy` binary, run in temp dirs with real `sh` processes
//! and real signals. Timing is proven from the timestamps murphy records, never from how
//! long a test took.

mod archive;
mod browser;
mod change;
mod checkpoints;
mod ci_generate;
mod ci_output;
mod cli;
mod config;
mod containment;
mod conventions;
mod hooks;
mod hygiene;
mod include;
mod init;
mod inputs;
mod issues;
mod masking;
mod moto;
mod private;
mod publish;
mod records;
mod resume;
mod resume_check;
mod run;
mod serve;
mod shared_archive;
mod shared_release;
mod shared_runs;
mod shared_store;
mod shell;
mod signals;
mod store_key;
mod support;
