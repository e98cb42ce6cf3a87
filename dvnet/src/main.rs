fn main() {
    println!("{}", dvnet::bpf::OBJECT.len());
}
