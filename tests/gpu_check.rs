//! `lqae-eval gpu-check` on a real GPU: the quantizer, a frozen-LM forward and training steps
//! give the same results on CUDA as on the CPU. Runs only in a `--features cuda` build on a
//! machine with a GPU; anywhere else it says why it did not run (CI has no GPU).

#[test]
fn cuda_matches_cpu() {
    #[cfg(feature = "cuda")]
    {
        match candle_core::Device::new_cuda(0) {
            Ok(dev) => {
                let (checks, notes) = lqae::bench::gpu::run(&dev, 0.2).expect("gpu-check runs");
                println!("{}", lqae::bench::gpu::markdown(&checks, &notes));
                let failed: Vec<_> = checks.iter().filter(|c| !c.pass).map(|c| &c.name).collect();
                assert!(failed.is_empty(), "CUDA differs from the CPU: {failed:?}");
                return;
            }
            Err(e) => eprintln!("skipped: a CUDA build, but no GPU could be opened: {e}"),
        }
    }
    #[cfg(not(feature = "cuda"))]
    eprintln!("skipped: built without --features cuda (scripts/cuda-build.sh builds it for the GPU machines)");
}

/// The same checks with the CPU as the second device: the plumbing runs end to end and a
/// device compared with itself passes every check exactly.
#[test]
fn cpu_against_itself_passes_exactly() {
    let (checks, _) =
        lqae::bench::gpu::run(&candle_core::Device::Cpu, 0.0).expect("gpu-check runs");
    assert!(checks.len() >= 6, "{} checks", checks.len());
    for c in &checks {
        assert!(c.pass, "{} failed: {}", c.name, c.value);
        assert!(c.value == 0.0 || c.value == 1.0, "{}: {}", c.name, c.value);
    }
}
