//! With the `xdp` feature, compiles `xdp/redirect.bpf.c` to a BPF object with clang
//! (`CLANG` overrides the compiler); without it, does nothing.

fn main() {
    println!("cargo:rerun-if-changed=xdp/redirect.bpf.c");
    println!("cargo:rerun-if-env-changed=CLANG");
    if std::env::var_os("CARGO_FEATURE_XDP").is_none() {
        return;
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    // Debian keeps asm/ headers under the multiarch directory.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = format!("/usr/include/{arch}-linux-gnu");
    let status = std::process::Command::new(&clang)
        .args([
            "-O2", "-g", "-Wall", "-Werror", "-target", "bpf", "-I", &multiarch, "-c",
        ])
        .arg("xdp/redirect.bpf.c")
        .arg("-o")
        .arg(out.join("redirect.bpf.o"))
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{clang} failed ({s}) on xdp/redirect.bpf.c: the `xdp` feature needs clang and libbpf headers (apt-get install clang llvm libbpf-dev)"),
        Err(e) => panic!("cannot run {clang} ({e}): the `xdp` feature needs clang and libbpf headers (apt-get install clang llvm libbpf-dev)"),
    }
}
