//! `xcat3`: the command-line client. The commands keep the prototype's names and syntax.

fn main() -> std::process::ExitCode {
    xcat3_cli::main()
}
