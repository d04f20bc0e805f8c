fn main() {
    canary_lab::init_tls();
    std::process::exit(canary_lab::cli::main());
}
