//! ONNX Runtime, loaded at run time (`ort` with `load-dynamic`) from the shared library that
//! `make setup` unpacks from the PyPI wheel, and sessions opened on a render device.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ort::environment::Environment;
use ort::session::Session;

use super::MediaError;

/// Where a model runs. `cpu`, or `cuda:N` through onnxruntime's CUDA execution provider
/// (the `onnxruntime-gpu` wheel on a machine with an NVIDIA GPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Device {
    Cpu,
    Cuda(i32),
}

impl Device {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.eq_ignore_ascii_case("cpu") {
            return Ok(Device::Cpu);
        }
        match raw.strip_prefix("cuda:").map(str::parse::<i32>) {
            Some(Ok(n)) if n >= 0 => Ok(Device::Cuda(n)),
            _ => Err(format!(
                "unknown render device `{raw}` (expected `cpu` or `cuda:N`)"
            )),
        }
    }

    /// A comma-separated list, as `render.devices` holds it.
    pub fn parse_list(raw: &str) -> Result<Vec<Self>, String> {
        let devices = raw
            .split(',')
            .filter(|d| !d.trim().is_empty())
            .map(Device::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if devices.is_empty() {
            return Err("render.devices names no device".into());
        }
        Ok(devices)
    }

    pub fn label(&self) -> String {
        match self {
            Device::Cpu => "cpu".into(),
            Device::Cuda(n) => format!("cuda:{n}"),
        }
    }
}

/// The loaded runtime: one per process (onnxruntime itself is process-wide), shared by every
/// model.
#[derive(Clone)]
pub struct Onnx {
    env: Arc<Environment>,
}

impl std::fmt::Debug for Onnx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Onnx")
    }
}

impl Onnx {
    /// Loads onnxruntime from `library`.
    pub fn load(library: Option<PathBuf>) -> Result<Self, MediaError> {
        let library = library
            .or_else(|| {
                let local = PathBuf::from(".setup/libonnxruntime.so");
                local.exists().then_some(local)
            })
            .ok_or_else(|| {
                MediaError::Setup(
                    "onnxruntime is not configured: run `make setup`, then start the server with \
                     `make run` (or set ORT_DYLIB_PATH / media.onnxruntime to libonnxruntime.so)"
                        .into(),
                )
            })?;
        if !library.exists() {
            return Err(MediaError::Setup(format!(
                "onnxruntime library {} does not exist: run `make setup`",
                library.display()
            )));
        }
        // onnxruntime allows one environment per process (the library itself is process-wide):
        // every app in the process shares it, whatever path a later one names.
        static ENV: Mutex<Option<Arc<Environment>>> = Mutex::new(None);
        let mut shared = ENV
            .lock()
            .map_err(|_| MediaError::Setup("onnxruntime environment lock poisoned".into()))?;
        if let Some(env) = shared.as_ref() {
            return Ok(Self { env: env.clone() });
        }
        let env = ort::init_from(&library)
            .map_err(|e| MediaError::Setup(format!("cannot load onnxruntime: {e}")))?
            .with_name("avatar-supervisor")
            .build()
            .map_err(|e| MediaError::Setup(format!("cannot start onnxruntime: {e}")))?;
        let env = Arc::new(env);
        *shared = Some(env.clone());
        Ok(Self { env })
    }

    /// Opens `model` on `device` with `threads` intra-op threads.
    pub fn open(
        &self,
        model: &Path,
        device: Device,
        threads: usize,
    ) -> Result<Session, MediaError> {
        if !model.exists() {
            return Err(MediaError::Setup(format!(
                "model {} does not exist: run `make setup`",
                model.display()
            )));
        }
        let what =
            |e: ort::Error| MediaError::Setup(format!("cannot open {}: {e}", model.display()));
        let mut builder = Session::builder(&self.env)
            .map_err(what)?
            .with_intra_threads(threads)
            .map_err(|e| what(e.into()))?;
        if let Device::Cuda(n) = device {
            builder = builder
                .with_execution_providers([ort::ep::CUDA::default()
                    .with_device_id(n)
                    .build()
                    .error_on_failure()])
                .map_err(|e| {
                    MediaError::Setup(format!(
                        "CUDA device {n} is not usable by onnxruntime ({e}); install the \
                         onnxruntime-gpu wheel (make setup does on a CUDA machine) or use `cpu`"
                    ))
                })?;
        }
        builder.commit_from_file(model).map_err(what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse() {
        assert_eq!(
            Device::parse_list("cpu, cuda:1").unwrap(),
            vec![Device::Cpu, Device::Cuda(1)]
        );
        assert!(Device::parse("gpu").unwrap_err().contains("`gpu`"));
        assert!(Device::parse("cuda:-1").is_err());
        assert!(Device::parse_list(" ,").is_err());
    }
}
