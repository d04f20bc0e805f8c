fn main() {
    canary::init_tls();
    std::process::exit(canary::cli::main());
}
