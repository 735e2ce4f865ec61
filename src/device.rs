//! `--device cpu|cuda[:N]`: the one place a device string becomes a candle `Device`.

use crate::error::{Error, Result};
use candle_core::Device;

/// Parse `cpu`, `cuda` or `cuda:N`. CUDA needs a build with `--features cuda`.
pub fn parse_device(spec: &str) -> Result<Device> {
    let spec = spec.trim().to_ascii_lowercase();
    let ordinal = match spec.as_str() {
        "cpu" => return Ok(Device::Cpu),
        "cuda" | "gpu" => 0,
        s => match s.strip_prefix("cuda:") {
            Some(n) => n.parse::<usize>().map_err(|_| {
                Error::setting(
                    "device",
                    format!("`{spec}`: the CUDA ordinal must be a number, e.g. cuda:0"),
                )
            })?,
            None => {
                return Err(Error::setting(
                    "device",
                    format!("`{spec}` is not a device; use cpu, cuda or cuda:N"),
                ))
            }
        },
    };
    cuda_device(ordinal)
}

#[cfg(feature = "cuda")]
fn cuda_device(ordinal: usize) -> Result<Device> {
    Device::new_cuda(ordinal)
        .map_err(|e| Error::setting("device", format!("cuda:{ordinal} could not be opened: {e}")))
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(ordinal: usize) -> Result<Device> {
    Err(Error::setting(
        "device",
        format!("cuda:{ordinal} was asked for but this binary was built without CUDA; rebuild with `--features cuda` or use --device cpu"),
    ))
}

/// A short name for results and logs: `cpu` or `cuda:N`.
pub fn device_name(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => format!("cuda:{}", device.location_ordinal()),
        Device::Metal(_) => "metal".into(),
    }
}

trait LocationOrdinal {
    fn location_ordinal(&self) -> usize;
}
impl LocationOrdinal for Device {
    fn location_ordinal(&self) -> usize {
        match self.location() {
            candle_core::DeviceLocation::Cuda { gpu_id } => gpu_id,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_rejects_garbage() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert!(parse_device(" CPU ").unwrap().is_cpu());
        let e = parse_device("tpu").unwrap_err().to_string();
        assert!(e.contains("setting `device`") && e.contains("tpu"), "{e}");
        let e = parse_device("cuda:x").unwrap_err().to_string();
        assert!(e.contains("ordinal"), "{e}");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_feature_says_how_to_fix() {
        let e = parse_device("cuda:1").unwrap_err().to_string();
        assert!(e.contains("--features cuda"), "{e}");
    }
}
