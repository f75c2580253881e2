//! Declares `crossbeam_loom`, the cfg under which crossbeam-epoch runs on loom, so that gating the
//! epoch models on it does not trip `unexpected_cfgs` (the workspace declares only `loom`).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(crossbeam_loom)");
}
