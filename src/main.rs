fn main() -> std::process::ExitCode {
    geossl::model::torch_ext::tune_allocator();
    geossl::cli::main()
}
