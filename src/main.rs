fn main() {
    std::process::exit(canary_lab::cli::main());
}
