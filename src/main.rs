fn main() -> std::process::ExitCode {
    geossl::cli::main()
}
