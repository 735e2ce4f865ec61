//! AVX2 and AVX-512 copies of the element-wise loops (same bits as the plain loops) and fast
//! exp / erf.

/// Tests only: run the baseline copies even where AVX2 is present, to compare the two.
pub(crate) static BASELINE_ONLY: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Whether the AVX2 copies run: the CPU has AVX2 (a runtime check, cached by std) and the
/// tests have not asked for the baseline ([`BASELINE_ONLY`]).
#[inline]
pub(crate) fn avx2_on() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        !BASELINE_ONLY.load(std::sync::atomic::Ordering::Relaxed)
            && std::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Tests only: run the AVX2 copies even where AVX-512 is present, to compare them too.
pub(crate) static AVX2_ONLY: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Whether the AVX-512 copies run: the CPU has AVX-512F, the AVX2 copies would run, and the
/// tests have not asked for AVX2 ([`AVX2_ONLY`]).
#[inline]
pub(crate) fn avx512_on() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        avx2_on()
            && !AVX2_ONLY.load(std::sync::atomic::Ordering::Relaxed)
            && std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Defines `[vis] fn $name(args) body` three times: as written (baseline x86-64, SSE2: 4 lanes),
/// compiled for AVX2 (8 lanes) and for AVX-512F (16), and calls the widest copy the CPU has (a
/// runtime check, cached by std). For the element-wise loops below, which are written as plain
/// index loops over slices and call only `#[inline(always)]` helpers, so that the whole loop is
/// compiled inside the wider function (a closure or iterator chain that is not inlined would
/// stay baseline code). Only the vector width changes, not the arithmetic (no fused
/// multiply-add: Rust never contracts `a * b + c`; partial sums live in explicit lanes), so
/// every copy gives the same bits (`tests::avx2_loops_match_the_baseline_bit_for_bit`
/// compares each copy the CPU has with the baseline). The AVX-512 copy: 1-2% off the ViT
/// block, the LM forward, Inception and AlexNet in alternating runs on the 2-core Xeon.
macro_rules! avx2_or_baseline {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512($($arg: $ty),*) $body
                if $crate::kernels::simd::avx512_on() {
                    // SAFETY: the CPU has AVX-512F (checked just above).
                    return unsafe { avx512($($arg),*) };
                }
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) $body
                if $crate::kernels::simd::avx2_on() {
                    // SAFETY: the CPU has AVX2 (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body
        }
    };
}

/// `e^x` in f32, branch-free so that loops over it vectorise: `2^n * p(r)` with
/// `x = n ln 2 + r`, `|r| <= ln 2 / 2` and a degree-6 Taylor polynomial (relative error
/// about 2e-7, the order of f32 rounding). Inputs are clamped to the finite range.
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // SAFETY: n is an integer in [-126, 127] after the clamp: the conversion is exact (and,
    // unlike a saturating `as`, vectorises).
    let e = unsafe { n.to_int_unchecked::<i32>() };
    p * f32::from_bits(((e + 127) as u32) << 23)
}

/// erf in f32 (Abramowitz and Stegun 7.1.26, absolute error below 1.5e-7), branch-free.
#[inline(always)]
pub fn fast_erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152 + t * 1.061_405_4))));
    (1.0 - poly * fast_exp(-a * a)).copysign(x)
}
