#!/usr/bin/env python3
"""make_corpora.py - builds the seed corpora of the fuzz targets into
fuzz/corpus/<target>/ (git-ignored) from ../shared/golden, ../shared/tokenizers,
packages the suite builds and small hand-made files. Standard library only.

usage: make_corpora.py OUT_DIR SHARED_DIR [SEED_DIR]
  SEED_DIR: where `BM_SEED_OUT=DIR build/test_corruption` wrote its packages
  and `bmc compile --print-after all` its IR (see make_corpora.sh)."""
import glob, gzip, hashlib, json, os, struct, sys

out, shared = sys.argv[1], sys.argv[2]
seeds = sys.argv[3] if len(sys.argv) > 3 else None

def put(target, data, name=None):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    name = name or hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

def read(p):
    with open(p, "rb") as f:
        return f.read()

# ---------------------------------------------------------------- hf_config
for p in glob.glob(f"{shared}/golden/*/*/config.json"):
    put("fuzz_hf_config", read(p))
put("fuzz_hf_config", '{"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2,'
    ' "vocab_size": 100, "intermediate_size": 128, "rope_scaling": {"rope_type": "llama3", "factor": 8.0},'
    ' "eos_token_id": [1, 2], "layer_types": ["sliding_attention", "full_attention"]}')

# ---------------------------------------------------------------- safetensors
def st_file(tensors, meta=None, align=8):
    hdr, data = {}, b""
    for name, (dt, shape, raw) in tensors.items():
        hdr[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if meta:
        hdr["__metadata__"] = meta
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % align)
    return struct.pack("<Q", len(h)) + h + data

put("fuzz_safetensors", st_file({"a": ("F32", [2, 3], struct.pack("<6f", *range(6))),
                                 "b": ("F16", [4], b"\x00\x3c" * 4), "s": ("I64", [], struct.pack("<q", 7))},
                                {"format": "pt"}))
put("fuzz_safetensors", st_file({"x": ("BF16", [1, 2, 2], b"\x80\x3f" * 4), "u": ("U8", [3], b"abc"),
                                 "e": ("I32", [0, 5], b"")}))
put("fuzz_safetensors", st_file({}))
for p in glob.glob(f"{shared}/golden/**/*.safetensors", recursive=True):
    if os.path.getsize(p) <= 65536:
        put("fuzz_safetensors", read(p))

# ---------------------------------------------------------------- safetensors index
s1, s2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
put("fuzz_st_index", json.dumps({"metadata": {"total_size": 32}, "weight_map": {"a": s1, "b": s1, "c": s2}}))
put("fuzz_st_index", json.dumps({"weight_map": {"c": s2}}))
put("fuzz_st_index", json.dumps({"weight_map": {"a": s1, "z": s2}}))

# ---------------------------------------------------------------- npy
def npy(descr, shape, raw, version=1, fortran=False):
    d = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (
        descr, "True" if fortran else "False", "(%s)" % "".join("%d, " % s for s in shape) if len(shape) != 1
        else "(%d,)" % shape[0])
    pre = 10 if version == 1 else 12
    d += " " * (-(pre + len(d) + 1) % 64) + "\n"
    ln = struct.pack("<H", len(d)) if version == 1 else struct.pack("<I", len(d))
    return b"\x93NUMPY" + bytes([version, 0]) + ln + d.encode("latin1" if version < 3 else "utf8") + raw

put("fuzz_npy", npy("<f4", [2, 3], struct.pack("<6f", *range(6))))
put("fuzz_npy", npy("<f2", [4], b"\x00\x3c" * 4, 2))
put("fuzz_npy", npy("<i8", [], struct.pack("<q", 5), 3))
put("fuzz_npy", npy("|i1", [1, 1, 3], b"abc"))
put("fuzz_npy", npy("<f8", [2], struct.pack("<2d", 1.5, -2)))
put("fuzz_npy", npy("<i4", [0, 3], b""))
put("fuzz_npy", npy("<f4", [2, 2], struct.pack("<4f", 1, 2, 3, 4), fortran=True))
for p in glob.glob(f"{shared}/**/*.npy", recursive=True)[:20]:
    if os.path.getsize(p) <= 65536:
        put("fuzz_npy", read(p))

# ---------------------------------------------------------------- packages, ELF, IR
def pkg_code(b):
    mo, ms = struct.unpack_from("<QQ", b, 16)
    m = json.loads(b[mo:mo + ms])
    c = m["code"]
    return b[c["offset"]:c["offset"] + c["size"]]

if seeds:
    for p in sorted(glob.glob(f"{seeds}/*.bmpk")):
        b = read(p)
        if len(b) <= (1 << 20):
            for mode in (0, 1, 3):
                put("fuzz_package", bytes([mode]) + b)
        put("fuzz_elf", pkg_code(b))
    for p in sorted(glob.glob(f"{seeds}/*.o")):
        put("fuzz_elf", read(p))
    for p in sorted(glob.glob(f"{seeds}/*.ir")):
        text = read(p).decode()
        for chunk in text.split("// IR of ")[1:]:  # one graph per "// IR of 'f' after pass p" block
            put("fuzz_ir_text", chunk.split("\n", 1)[1])
put("fuzz_ir_text", "graph main {\n  sym n 8\n  %0 = input \"x\" f32 [n, 4]\n  %1 = weight \"w\" f32 [4]\n"
    "  %2 = mul %0, %1 : f32 [n, 4]\n  %3 = const f32 [2] {1, 2}\n  output \"y\" %2\n}\n")

# ---------------------------------------------------------------- tokenizers
tok = f"{shared}/tokenizers"

def hf_subset(path, n_vocab, n_merges):
    d = json.loads(read(path))
    m = d["model"]
    keep = {t: i for t, i in m["vocab"].items() if i < n_vocab}
    merges = []
    for mg in m["merges"]:
        a, b = mg.split(" ", 1) if isinstance(mg, str) else mg
        if a in keep and b in keep and a + b in keep:
            merges.append(mg)
        if len(merges) >= n_merges:
            break
    m["vocab"], m["merges"] = keep, merges
    added = []
    for k, t in enumerate(d.get("added_tokens", [])[:8]):
        t = dict(t)
        if t["id"] >= n_vocab:
            t["id"] = n_vocab + k
        added.append(t)
    d["added_tokens"] = added
    return json.dumps(d, ensure_ascii=False)

for name, nv in (("llama3", 400), ("qwen", 400), ("mistral_v1", 400)):
    p = f"{tok}/{name}/tokenizer.json"
    if os.path.exists(p):
        put("fuzz_tok_hf_json", hf_subset(p, nv, 200), f"{name}_subset.json")
put("fuzz_tok_hf_json", '{"added_tokens": [{"id": 6, "content": "<s>", "special": true}],'
    ' "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false},'
    ' "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "abc": 4, "\\u0120": 5},'
    ' "merges": [["a", "b"], ["ab", "c"]]}}')

def pb_fields(b):
    """Top-level protobuf fields: (number, wire type, raw bytes of the field)."""
    i, res = 0, []
    def varint(i):
        v = s = 0
        while True:
            c = b[i]; i += 1
            v |= (c & 0x7f) << s; s += 7
            if c < 0x80:
                return v, i
    while i < len(b):
        st = i
        key, i = varint(i)
        wt = key & 7
        if wt == 0:
            _, i = varint(i)
        elif wt == 1:
            i += 8
        elif wt == 5:
            i += 4
        elif wt == 2:
            ln, i = varint(i); i += ln
        else:
            raise ValueError("wire type %d" % wt)
        res.append((key >> 3, wt, b[st:i]))
    return res

def spm_subset(path, n):
    out_b, k = b"", 0
    for num, wt, raw in pb_fields(read(path)):
        if num == 1:
            k += 1
            if k > n:
                continue
        out_b += raw
    return out_b

for p, n in ((f"{tok}/llama2_spm/tokenizer.model", 600), (f"{tok}/unigram_t5style/test_model.model", 300),
             (f"{tok}/mistral_v3/tokenizer.model.v3", 1200)):
    if os.path.exists(p):
        put("fuzz_tok_spm", spm_subset(p, n), os.path.basename(os.path.dirname(p)) + "_subset.model")

p = f"{tok}/llama3/tokenizer.model"
if os.path.exists(p):
    put("fuzz_tok_tiktoken", b"".join(read(p).splitlines(True)[:300]), "llama3_300.tiktoken")
put("fuzz_tok_tiktoken", "IQ== 0\nIg== 1\nIw== 2\nISI= 3\n")

p = f"{tok}/clip/bpe_simple_vocab_16e6.txt.gz"
if os.path.exists(p):
    lines = gzip.decompress(read(p)).decode().split("\n")
    merges = "\n".join(lines[:301]) + "\n"
    put("fuzz_tok_clip", b"\x00" + merges.encode(), "clip_merges_300")
    put("fuzz_tok_clip", b"\x00" + gzip.compress(merges.encode(), mtime=0), "clip_merges_300_gz")
p, q = f"{tok}/clip/vocab.json", f"{tok}/clip/merges.txt"
if os.path.exists(p) and os.path.exists(q):
    n = 300
    mlines = read(q).decode().split("\n")
    vocab = {t: i for t, i in json.loads(read(p)).items() if i < 512 + n}
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = 512 + n, 513 + n
    put("fuzz_tok_clip", b"\x01" + json.dumps(vocab).encode() + b"\x00" + "\n".join(mlines[:n + 1]).encode() + b"\n",
        "clip_vocab_merges_300")

for p in glob.glob(f"{tok}/*/tokenizer_config.json"):
    put("fuzz_tok_config", read(p))
put("fuzz_tok_config", '{"bos_token": {"content": "<|begin_of_text|>"}, "eos_token": "<|eot_id|>", "pad_token": null,'
    ' "chat_template": "{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>{% endfor %}"}')

# tokenize: texts from every golden.json, for every tokenizer slot (see fuzz_tokenize.c)
texts = set()
for p in glob.glob(f"{tok}/*/golden.json"):
    for rec in json.loads(read(p)):
        if isinstance(rec, dict) and isinstance(rec.get("text"), str):
            texts.add(rec["text"])
for k, t in enumerate(sorted(texts)[:40]):
    put("fuzz_tokenize", bytes([k % 9, 7]) + t.encode("utf8", "surrogatepass"))
for k in range(9):
    put("fuzz_tokenize", bytes([0x80 | k, 1]) + struct.pack("<8I", 0, 1, 2, 3, 100, 1000, 128000, 128009))
# ---------------------------------------------------------------- png (bm_image_read_png_memory)
import zlib
def png(w, h, color, depth, rows, interlace=0, extra=b""):
    """A PNG from raw scanlines (each row gets filter byte 0); extra: chunks
    placed before IDAT (PLTE, tRNS, tEXt)."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    raw = b"".join(b"\x00" + r for r in rows)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, interlace)) +
            extra + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
def text_chunk(k, v):
    d = k + b"\x00" + v
    return struct.pack(">I", len(d)) + b"tEXt" + d + struct.pack(">I", zlib.crc32(b"tEXt" + d) & 0xffffffff)
def plte(n):
    d = bytes(c for i in range(n) for c in (i * 40 % 256, i * 90 % 256, 255 - i))
    return struct.pack(">I", len(d)) + b"PLTE" + d + struct.pack(">I", zlib.crc32(b"PLTE" + d) & 0xffffffff)
def trns(d):
    return struct.pack(">I", len(d)) + b"tRNS" + d + struct.pack(">I", zlib.crc32(b"tRNS" + d) & 0xffffffff)
params = text_chunk(b"parameters", b"a photo of a cat\nNegative prompt: blurry\nSteps: 20, Seed: 42, Size: 4x3")
seeds_png = {
    "rgb_4x3": png(4, 3, 2, 8, [bytes(range(y * 12, y * 12 + 12)) for y in range(3)], extra=params),
    "rgba_3x2": png(3, 2, 6, 8, [bytes(range(y * 12, y * 12 + 12)) for y in range(2)]),
    "gray_5x2": png(5, 2, 0, 8, [bytes([1, 2, 3, 4, 5]), bytes([9, 8, 7, 6, 5])]),
    "gray1_9x2": png(9, 2, 0, 1, [b"\xa5\x80", b"\x5a\x00"]),
    "gray_alpha_2x2": png(2, 2, 4, 8, [b"\x10\xff\x20\x80", b"\x30\x00\x40\x01"]),
    "rgb16_2x1": png(2, 1, 2, 16, [bytes(range(12))]),
    "palette_3x2_trns": png(3, 2, 3, 8, [b"\x00\x01\x02", b"\x02\x01\x00"], extra=plte(3) + trns(b"\x00\x80")),
    "palette4_5x1": png(5, 1, 3, 4, [b"\x01\x23\x40"], extra=plte(5)),
    "rgb_interlaced_5x5": png(5, 5, 2, 8, [bytes((x * 7 + y * 3) % 256 for x in range(15)) for y in range(5)], interlace=1),
}
for name, data in seeds_png.items():
    put("fuzz_png", data, name)
    for cut in (8, 33, len(data) // 2, len(data) - 12, len(data) - 1):  # truncations
        put("fuzz_png", data[:cut], "%s_cut%d" % (name, cut))

# ---------------------------------------------------------------- model_index (byte 0: 0 model_index.json,
# 1 unet, 2 vae, 3 text encoder config.json; see fuzz_model_index.c)
put("fuzz_model_index", b"\x00" + json.dumps({
    "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.21.0",
    "feature_extractor": ["transformers", "CLIPImageProcessor"], "safety_checker": [None, None],
    "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"], "requires_safety_checker": False}).encode(), "model_index_sd15")
put("fuzz_model_index", b"\x00" + b'{"_class_name": "StableDiffusionXLPipeline"}', "model_index_sdxl")
for p in glob.glob(f"{shared}/golden/diffusers/*/config.json"):
    kind = 1 if "unet" in p else 2 if "vae" in p else 3
    put("fuzz_model_index", bytes([kind]) + read(p))
put("fuzz_model_index", b"\x01" + json.dumps({
    "block_out_channels": [32, 64], "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "attention_head_dim": [2, 4], "cross_attention_dim": 32,
    "layers_per_block": 1, "norm_num_groups": 8, "in_channels": 9, "use_linear_projection": True}).encode(), "unet_tiny")
put("fuzz_model_index", b"\x02" + json.dumps({
    "block_out_channels": [32, 64], "layers_per_block": 1, "norm_num_groups": 8, "latent_channels": 4,
    "scaling_factor": 0.18215}).encode(), "vae_tiny")
put("fuzz_model_index", b"\x03" + json.dumps({
    "architectures": ["CLIPTextModelWithProjection"], "vocab_size": 1000, "hidden_size": 32, "intermediate_size": 64,
    "num_attention_heads": 4, "num_hidden_layers": 2, "max_position_embeddings": 77, "hidden_act": "gelu",
    "projection_dim": 32, "eos_token_id": 2}).encode(), "clip_tiny")

print("corpora in", out, ":", ", ".join("%s %d" % (d, len(os.listdir(os.path.join(out, d))))
                                      for d in sorted(os.listdir(out))))
