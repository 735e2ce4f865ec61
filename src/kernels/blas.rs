//! The matrix products of the CPU kernels (dense and frozen-linear forward and backward,
//! attention's products, the code-search tiles): a vendor BLAS's `sgemm` when one is loaded, the
//! `gemm` crate otherwise.
//!
//! The BLAS is Intel oneMKL (asset `mkl`, the `mkl` wheel) or OpenBLAS as numpy and scipy ship
//! it (asset `openblas`, the `scipy-openblas32` wheel), both dispatching to the host CPU's
//! kernels at run time, fetched and verified like every asset and loaded at run time with
//! `libloading` (nothing at build time, no system package).
//! `LQAE_BLAS` chooses: unset or `auto` (on an Intel CPU oneMKL's sequential layer, asset `mkl`,
//! fetched on first use, the gemm crate if it cannot be had, said once on stderr; on other CPUs
//! the gemm crate), `mkl` or `openblas` (that one, an error if it cannot be had), `off` (the
//! gemm crate).
//! [`set_enabled`] switches at run time (the bench times both).
//!
//! One owner of the cores: OpenBLAS runs single-threaded (its own thread pool is set to 1 at
//! load), and rayon splits the work as it does for the gemm crate (rows of the output per task;
//! [`Par::Rayon`] products split here).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

type CblasSgemm = unsafe extern "C" fn(
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    f32,
    *const f32,
    i32,
    *const f32,
    i32,
    f32,
    *mut f32,
    i32,
);

const ROW_MAJOR: i32 = 101;
const NO_TRANS: i32 = 111;
const TRANS: i32 = 112;
const PACKED: i32 = 151;
const A_MATRIX: i32 = 161;
const B_MATRIX: i32 = 162;

/// oneMKL's packed products: `cblas_sgemm_pack_get_size`, `cblas_sgemm_pack`,
/// `cblas_sgemm_compute`.
struct PackApi {
    get_size: unsafe extern "C" fn(i32, i32, i32, i32) -> usize,
    pack: unsafe extern "C" fn(i32, i32, i32, i32, i32, i32, f32, *const f32, i32, *mut f32),
    #[allow(clippy::type_complexity)]
    compute: unsafe extern "C" fn(
        i32,
        i32,
        i32,
        i32,
        i32,
        i32,
        *const f32,
        i32,
        *const f32,
        i32,
        f32,
        *mut f32,
        i32,
    ),
}

/// A loaded BLAS.
pub struct Blas {
    sgemm: CblasSgemm,
    /// oneMKL's packed products (not in OpenBLAS).
    pack: Option<PackApi>,
    /// e.g. `openblas 0.3.34 (SkylakeX)`.
    pub name: String,
    _lib: libloading::Library,
}

static BLAS: OnceLock<Option<Blas>> = OnceLock::new();
static ENABLED: AtomicBool = AtomicBool::new(true);

fn wanted() -> &'static str {
    static W: OnceLock<String> = OnceLock::new();
    W.get_or_init(|| {
        std::env::var("LQAE_BLAS")
            .unwrap_or_default()
            .trim()
            .to_lowercase()
    })
}

fn init() -> Option<Blas> {
    let w = wanted();
    let w = match w {
        // Measured (README, "BLAS backends"): on an Intel Xeon oneMKL's sequential sgemm beats
        // the gemm crate in every kernel and OpenBLAS loses to it; on other CPUs the gemm crate
        // is kept until a BLAS is measured to win there.
        "" | "auto" if cpu_vendor() == "GenuineIntel" => "mkl",
        "" | "auto" => return None,
        w => w,
    };
    let got = match w {
        "off" | "gemm" => return None,
        "openblas" => crate::assets::ensure(&crate::assets::OPENBLAS)
            .map_err(|e| e.to_string())
            .and_then(|dir| unsafe { load(&dir.join("libscipy_openblas.so")) }),
        "mkl" => crate::assets::ensure(&crate::assets::MKL)
            .map_err(|e| e.to_string())
            .and_then(|dir| unsafe { load_mkl(&dir.join("libmkl_rt.so.3")) }),
        other => panic!("LQAE_BLAS=`{other}`: use auto, openblas, mkl or off"),
    };
    match got {
        Ok(b) => Some(b),
        Err(e) if wanted() == "openblas" || wanted() == "mkl" => panic!("LQAE_BLAS={w}: {e}"),
        Err(e) => {
            eprintln!("note: OpenBLAS is not available ({e}); the CPU kernels use the gemm crate (set LQAE_BLAS=off to silence this)");
            None
        }
    }
}

/// The CPU vendor string (`GenuineIntel`, `AuthenticAMD`), empty off x86-64.
pub fn cpu_vendor() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        #[allow(unused_unsafe)]
        // SAFETY: cpuid leaf 0 exists on every x86-64 CPU.
        let r = unsafe { std::arch::x86_64::__cpuid(0) };
        let b: Vec<u8> = [r.ebx, r.edx, r.ecx]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        String::from_utf8_lossy(&b).into_owned()
    }
    #[cfg(not(target_arch = "x86_64"))]
    String::new()
}

/// # Safety
/// `path` must be the scipy-openblas shared library (checked by its asset's sha256).
unsafe fn load(path: &std::path::Path) -> Result<Blas, String> {
    let lib = libloading::Library::new(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let sym = |name: &[u8]| {
        format!(
            "{}: no symbol {}",
            path.display(),
            String::from_utf8_lossy(name)
        )
    };
    let sgemm: CblasSgemm = *lib
        .get::<CblasSgemm>(b"scipy_cblas_sgemm")
        .map_err(|_| sym(b"scipy_cblas_sgemm"))?;
    let set_threads = *lib
        .get::<unsafe extern "C" fn(i32)>(b"scipy_openblas_set_num_threads")
        .map_err(|_| sym(b"scipy_openblas_set_num_threads"))?;
    set_threads(1);
    let text = |f: &[u8]| -> String {
        lib.get::<unsafe extern "C" fn() -> *const std::ffi::c_char>(f)
            .ok()
            .map(|g| std::ffi::CStr::from_ptr(g()).to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let core = text(b"scipy_openblas_get_corename");
    let config = text(b"scipy_openblas_get_config");
    let version = config
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .unwrap_or("?")
        .to_string();
    Ok(Blas {
        sgemm,
        pack: None,
        name: format!("openblas {version} ({core})"),
        _lib: lib,
    })
}

/// # Safety
/// `path` must be oneMKL's `libmkl_rt` (checked by its asset's sha256), its other libraries
/// beside it.
unsafe fn load_mkl(path: &std::path::Path) -> Result<Blas, String> {
    let lib = libloading::Library::new(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let sym = |name: &str| format!("{}: no symbol {name}", path.display());
    // Before any other call: the sequential layer (rayon owns the cores) and 32-bit ints.
    let layer = *lib
        .get::<unsafe extern "C" fn(i32) -> i32>(b"MKL_Set_Threading_Layer")
        .map_err(|_| sym("MKL_Set_Threading_Layer"))?;
    let iface = *lib
        .get::<unsafe extern "C" fn(i32) -> i32>(b"MKL_Set_Interface_Layer")
        .map_err(|_| sym("MKL_Set_Interface_Layer"))?;
    if layer(1) != 1 || iface(0) != 0 {
        return Err(format!(
            "{}: the sequential LP64 layers could not be set",
            path.display()
        ));
    }
    let sgemm: CblasSgemm = *lib
        .get::<CblasSgemm>(b"cblas_sgemm")
        .map_err(|_| sym("cblas_sgemm"))?;
    let pack = (|| {
        Some(PackApi {
            get_size: *lib.get(b"cblas_sgemm_pack_get_size").ok()?,
            pack: *lib.get(b"cblas_sgemm_pack").ok()?,
            compute: *lib.get(b"cblas_sgemm_compute").ok()?,
        })
    })();
    let mut buf = vec![0u8; 256];
    if let Ok(v) =
        lib.get::<unsafe extern "C" fn(*mut std::ffi::c_char, i32)>(b"MKL_Get_Version_String")
    {
        v(buf.as_mut_ptr() as *mut std::ffi::c_char, buf.len() as i32);
    }
    let version = String::from_utf8_lossy(&buf)
        .trim_end_matches('\0')
        .trim()
        .to_string();
    // "Intel(R) oneAPI Math Kernel Library Version 2026.2-Product Build ..." -> "2026.2".
    let short = version
        .split("Version ")
        .nth(1)
        .and_then(|v| v.split(['-', ' ']).next())
        .unwrap_or("?");
    Ok(Blas {
        sgemm,
        pack,
        name: format!("mkl {short} sequential"),
        _lib: lib,
    })
}

/// The BLAS in use now, if any.
pub fn active() -> Option<&'static Blas> {
    if !ENABLED.load(Ordering::Relaxed) {
        return None;
    }
    BLAS.get_or_init(init).as_ref()
}

/// Whether a BLAS can be used (loading it if not yet loaded), whatever [`set_enabled`] says.
pub fn available() -> bool {
    BLAS.get_or_init(init).is_some()
}

/// Use the BLAS (when loaded) or the gemm crate from now on, for every thread.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// What computes the products now: recorded in results as `provenance.blas`.
pub fn backend_name() -> String {
    match active() {
        Some(b) => b.name.clone(),
        None => "gemm crate 0.19".into(),
    }
}

/// A product's shape: `m, n, k`, lhs and rhs as `N` (as stored), `T` (transposed) or `P`
/// (packed, [`Packed`]), split across rayon.
type Shape = (usize, usize, usize, char, char, bool);

/// Per-shape timing of every product (`LQAE_BLAS_PROFILE=1`): where a kernel's time goes.
struct Profile {
    on: bool,
    /// Shape -> (calls, seconds).
    calls: std::sync::Mutex<std::collections::HashMap<Shape, (u64, f64)>>,
}

fn profile() -> &'static Profile {
    static P: OnceLock<Profile> = OnceLock::new();
    P.get_or_init(|| Profile {
        on: std::env::var("LQAE_BLAS_PROFILE").is_ok_and(|v| !v.is_empty() && v != "0"),
        calls: Default::default(),
    })
}

/// The products timed since the last call (with `LQAE_BLAS_PROFILE=1`; else `None`), as a
/// Markdown table, longest total first; the counts are cleared.
pub fn profile_report() -> Option<String> {
    let p = profile();
    if !p.on {
        return None;
    }
    let mut rows: Vec<_> = p.calls.lock().unwrap().drain().collect();
    rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
    let total: f64 = rows.iter().map(|r| r.1 .1).sum();
    let mut s = format!(
        "products on {}{} ({:.1} ms in all)\n\n| m x n x k | lhs, rhs | threads | calls | ms per call | GFLOP/s | share |\n|---|---|---|---|---|---|---|\n",
        backend_name(),
        if small_path() {
            " (the attention's small products by `small_mm`)"
        } else {
            ""
        },
        total * 1e3
    );
    for ((m, n, k, ta, tb, par), (c, t)) in rows {
        let flop = 2.0 * (m * n * k) as f64 * c as f64;
        s += &format!(
            "| {m} x {n} x {k} | {ta}, {tb} | {} | {c} | {:.3} | {:.0} | {:.0}% |\n",
            if par { "rayon" } else { "one" },
            t * 1e3 / c as f64,
            flop / t / 1e9,
            100.0 * t / total.max(1e-12)
        );
    }
    Some(s)
}

/// Threading of one product.
#[derive(Clone, Copy)]
pub enum Par {
    /// On the calling thread (the callers split rows across rayon themselves).
    None,
    /// Split across rayon's threads.
    Rayon,
}

/// `dst (m x n) = [alpha * dst +] beta * lhs (m x k) @ rhs (k x n)`, with `dst`'s column
/// stride 1 and row stride `dst_rs`, and each operand given by its row and column strides (the
/// gemm crate's convention; `read_dst` false means `dst` is not read, so it may be
/// uninitialised).
///
/// # Safety
/// Every pointer must be valid for the elements its strides and sizes reach.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    read_dst: bool,
    lhs: *const f32,
    ls: (usize, usize),
    rhs: *const f32,
    rs: (usize, usize),
    alpha: f32,
    beta: f32,
    par: Par,
) {
    timed((m, n, k, nt(ls), nt(rs), matches!(par, Par::Rayon)), || {
        sgemm_inner(
            m, n, k, dst, dst_rs, read_dst, lhs, ls, rhs, rs, alpha, beta, par,
        )
    });
}

/// `dst (m x n) = beta * lhs (m x k) @ rhs (k x n)` on the calling thread, `dst` not read:
/// [`sgemm`] for the attention's small products. Where the gemm crate would take them and
/// [`super::small_mm::fits`], the register-blocked kernel of `small_mm` computes them, with the
/// gemm crate's bits; a vendor BLAS, when one is loaded, computes them as before.
///
/// # Safety
/// As [`sgemm`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm_small(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    lhs: *const f32,
    ls: (usize, usize),
    rhs: *const f32,
    rs: (usize, usize),
    beta: f32,
) {
    if !small_taken(m, n, k) {
        return sgemm(
            m,
            n,
            k,
            dst,
            dst_rs,
            false,
            lhs,
            ls,
            rhs,
            rs,
            0.0,
            beta,
            Par::None,
        );
    }
    timed((m, n, k, nt(ls), nt(rs), false), || {
        super::small_mm::run(m, n, k, dst, dst_rs, lhs, ls, rhs, rs, beta)
    });
}

/// Whether [`sgemm_small`] computes a product of these sizes in its own kernel. Not in
/// unoptimised (test) builds: this crate is built without optimisation there, the gemm crate
/// with it (Cargo.toml), and the kernel ran at 0.3 GFLOP/s against the gemm crate's 25; the
/// two give the same bits, and `small_mm`'s test runs the kernel in every build.
pub fn small_taken(m: usize, n: usize, k: usize) -> bool {
    small_path() && super::small_mm::fits(m, n, k)
}

/// Whether [`sgemm_small`] takes its own kernel for the sizes that fit it (see
/// [`small_taken`]).
fn small_path() -> bool {
    !cfg!(debug_assertions) && active().is_none()
}

/// An operand's mark in the profile: `N` as stored (unit column stride), `T` transposed.
fn nt((_, cs): (usize, usize)) -> char {
    if cs == 1 {
        'N'
    } else {
        'T'
    }
}

/// A `rows x cols` row-major operand at strides `(rs, cs)` as CBLAS reads it: a unit column
/// stride is "no transpose" with its row stride as the leading dimension; a unit row stride is
/// the transpose of a row-major matrix.
fn cblas_op((rs, cs): (usize, usize), rows: usize, cols: usize) -> (i32, usize) {
    if cs == 1 && (rs >= cols || rows == 1) {
        (NO_TRANS, rs.max(cols).max(1))
    } else {
        (TRANS, cs.max(rows).max(1))
    }
}

/// Which operand of a product a [`Packed`] matrix is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// `lhs` `(m x k)`.
    Lhs,
    /// `rhs` `(k x n)`.
    Rhs,
}

/// One operand of many products, packed once by the vendor BLAS into its kernels' own layout
/// (oneMKL's `cblas_sgemm_pack`), for a frozen matrix read by product after product: the
/// frozen language model's weights, the feature networks' transformed convolution weights.
/// [`sgemm_packed`] then skips that operand's packing on every call, and where it streams from
/// memory, reads it in the order the kernels do (a 512 x 32 x 512 product whose `lhs` comes
/// from memory: 84 GFLOP/s as stored, 109 packed, on the 2-core Xeon). oneMKL's packed products
/// give `cblas_sgemm`'s bits at the sizes the callers use them for (tested:
/// `tests/blas.rs`), from 16 rows up; below that its small-product path sums otherwise.
///
/// The buffer is its own anonymous mapping: oneMKL asks for about 7.5 MiB more than the
/// matrix, and writes only the matrix and a header, so the pages it never touches are never
/// committed.
pub struct Packed {
    ptr: *mut f32,
    bytes: usize,
    side: Side,
    /// The operand's rows and columns.
    rows: usize,
    cols: usize,
}

// SAFETY: the buffer is written once, by `pack`, and only read after that.
unsafe impl Send for Packed {}
unsafe impl Sync for Packed {}

impl Drop for Packed {
    fn drop(&mut self) {
        // SAFETY: `ptr` is the mapping of `bytes` that `pack` made.
        unsafe { libc::munmap(self.ptr.cast(), self.bytes) };
    }
}

impl Packed {
    /// The operand's rows and columns (`m x k` for [`Side::Lhs`], `k x n` for [`Side::Rhs`]).
    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }
}

/// Whether the loaded BLAS (in use now) packs operands ([`pack`], [`sgemm_packed`]): oneMKL.
pub fn packs() -> bool {
    active().is_some_and(|b| b.pack.is_some())
}

/// The `rows x cols` operand at `src` (row and column strides `strides`, as [`sgemm`]) packed
/// as `side` of products whose other size (`n` for `lhs`, `m` for `rhs`) is about `other`;
/// `None` where no BLAS in use packs ([`packs`]) or the mapping fails.
///
/// # Safety
/// `src` must be valid for the elements its strides and sizes reach.
pub unsafe fn pack(
    side: Side,
    rows: usize,
    cols: usize,
    src: *const f32,
    (rs, cs): (usize, usize),
    other: usize,
) -> Option<Packed> {
    let api = active()?.pack.as_ref()?;
    if rows == 0 || cols == 0 || (rs != 1 && cs != 1) {
        return None;
    }
    let other = other.max(1) as i32;
    let (ident, m, n, k) = match side {
        Side::Lhs => (A_MATRIX, rows as i32, other, cols as i32),
        Side::Rhs => (B_MATRIX, other, cols as i32, rows as i32),
    };
    let bytes = (api.get_size)(ident, m, n, k).max(4);
    let ptr = libc::mmap(
        std::ptr::null_mut(),
        bytes,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
        -1,
        0,
    );
    if ptr == libc::MAP_FAILED {
        return None;
    }
    let (trans, ld) = cblas_op((rs, cs), rows, cols);
    (api.pack)(
        ROW_MAJOR,
        ident,
        trans,
        m,
        n,
        k,
        1.0,
        src,
        ld as i32,
        ptr.cast(),
    );
    Some(Packed {
        ptr: ptr.cast(),
        bytes,
        side,
        rows,
        cols,
    })
}

/// `dst (m x n) = [dst +] lhs (m x k) @ rhs (k x n)` on the calling thread, one operand
/// [`Packed`] and the other as in [`sgemm`] (`other`: its pointer and strides), `dst` read
/// only when `read_dst`. Panics if no BLAS in use packs (callers check [`packs`]) or the sizes
/// are not the packed operand's.
///
/// # Safety
/// As [`sgemm`] for `other` and `dst`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm_packed(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    read_dst: bool,
    packed: &Packed,
    other: *const f32,
    (rs, cs): (usize, usize),
) {
    let api = active()
        .and_then(|b| b.pack.as_ref())
        .expect("sgemm_packed without a BLAS that packs");
    let (p_dims, o_dims) = match packed.side {
        Side::Lhs => ((m, k), (k, n)),
        Side::Rhs => ((k, n), (m, k)),
    };
    assert_eq!(
        packed.dims(),
        p_dims,
        "sgemm_packed: the packed operand's sizes"
    );
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let (trans, ld) = cblas_op((rs, cs), o_dims.0, o_dims.1);
    let c_beta = if read_dst { 1.0 } else { 0.0 };
    let mark = if trans == TRANS { 'T' } else { 'N' };
    let key = match packed.side {
        Side::Lhs => (m, n, k, 'P', mark, false),
        Side::Rhs => (m, n, k, mark, 'P', false),
    };
    // The packed operand's leading dimension is ignored by oneMKL (its layout is its own).
    let pp = packed.ptr.cast_const();
    timed(key, || match packed.side {
        Side::Lhs => (api.compute)(
            ROW_MAJOR,
            PACKED,
            trans,
            m as i32,
            n as i32,
            k as i32,
            pp,
            k as i32,
            other,
            ld as i32,
            c_beta,
            dst,
            dst_rs.max(n) as i32,
        ),
        Side::Rhs => (api.compute)(
            ROW_MAJOR,
            trans,
            PACKED,
            m as i32,
            n as i32,
            k as i32,
            other,
            ld as i32,
            pp,
            n as i32,
            c_beta,
            dst,
            dst_rs.max(n) as i32,
        ),
    });
}

/// `f`, its time added to the profile's row `key` when profiling.
fn timed(key: Shape, f: impl FnOnce()) {
    let p = profile();
    let t0 = p.on.then(std::time::Instant::now);
    f();
    let Some(t0) = t0 else { return };
    let mut calls = p.calls.lock().unwrap();
    let e = calls.entry(key).or_insert((0, 0.0));
    e.0 += 1;
    e.1 += t0.elapsed().as_secs_f64();
}

/// [`sgemm`] on the gemm crate, whatever BLAS is loaded.
///
/// # Safety
/// As [`sgemm`].
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_crate(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    read_dst: bool,
    lhs: *const f32,
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: *const f32,
    (rhs_rs, rhs_cs): (usize, usize),
    alpha: f32,
    beta: f32,
    par: Par,
) {
    let threads = match par {
        Par::None => gemm::Parallelism::None,
        Par::Rayon => gemm::Parallelism::Rayon(super::threads()),
    };
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        read_dst,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        alpha,
        beta,
        false,
        false,
        false,
        threads,
    );
}

#[allow(clippy::too_many_arguments)]
unsafe fn sgemm_inner(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    read_dst: bool,
    lhs: *const f32,
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: *const f32,
    (rhs_rs, rhs_cs): (usize, usize),
    alpha: f32,
    beta: f32,
    par: Par,
) {
    if m == 0 || n == 0 {
        return;
    }
    let blas =
        active().filter(|_| (lhs_cs == 1 || lhs_rs == 1) && (rhs_cs == 1 || rhs_rs == 1) && k > 0);
    let Some(b) = blas else {
        let ls = (lhs_rs, lhs_cs);
        let rs = (rhs_rs, rhs_cs);
        return gemm_crate(
            m, n, k, dst, dst_rs, read_dst, lhs, ls, rhs, rs, alpha, beta, par,
        );
    };
    let (ta, lda) = cblas_op((lhs_rs, lhs_cs), m, k);
    let (tb, ldb) = cblas_op((rhs_rs, rhs_cs), k, n);
    let c_beta = if read_dst { alpha } else { 0.0 };
    let (sg, lhs_a, rhs_a, dst_a) = (b.sgemm, lhs as usize, rhs as usize, dst as usize);
    // Rows r0..r0+rows of dst from the same rows of lhs (element (r0, 0) is at r0 * lhs_rs).
    let call = move |r0: usize, rows: usize| {
        sg(
            ROW_MAJOR,
            ta,
            tb,
            rows as i32,
            n as i32,
            k as i32,
            beta,
            (lhs_a as *const f32).add(r0 * lhs_rs),
            lda as i32,
            rhs_a as *const f32,
            ldb as i32,
            c_beta,
            (dst_a as *mut f32).add(r0 * dst_rs),
            dst_rs.max(n) as i32,
        )
    };
    match par {
        Par::None => call(0, m),
        Par::Rayon => {
            use rayon::prelude::*;
            let threads = super::threads();
            let per = m.div_ceil(threads).max(1);
            // SAFETY: each task writes its own rows r0..r0+rows of dst.
            (0..m.div_ceil(per))
                .into_par_iter()
                .for_each(|t| call(t * per, per.min(m - t * per)));
        }
    }
}
