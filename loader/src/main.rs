fn main() {
    eprintln!("inxpect: not yet implemented");
    std::process::exit(2);
}
