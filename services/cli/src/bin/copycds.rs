//! `xcat3-copycds`: imports an installation ISO into the image service (through the api).

fn main() -> std::process::ExitCode {
    xcat3_cli::copycds::main()
}
