fn main() {
    std::process::exit(murphy::cli::main());
}
