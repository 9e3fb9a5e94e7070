/// mimalloc: see the note on it in Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let code = murphy::cli::main();
    murphy::exit_now(code);
}
