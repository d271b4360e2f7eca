"""PyTorch baseline for `npm run bench -- --only train` (our own code, not the original's).

One optimiser step of the LLaDA/DiMOO architecture as the original train.py
runs it: forward with labels over the whole batch (logits for every
position, cross entropy with ignore_index -100), backward,
clip_grad_norm_(4.0), AdamW (betas 0.9/0.95, eps 1e-8). Weights are read
from the checkpoint's safetensors (bf16 upcast to float32) without extra
packages, so Debian's python3-torch is enough.

usage: torch-train.py CHECKPOINT_DIR BATCH SEQ_LEN THREADS STEPS [BUDGET_S]
One untimed warm-up step, then up to STEPS timed steps, stopping early once
BUDGET_S seconds (default: no limit) have passed since the warm-up began
(at least one timed step). Each finished step prints a TORCH_STEP line, so a
caller that has to kill a slow run still learns what it measured.
prints: TORCH_STEP {"step": i, "s": ..., "loss": ...} per step, then
TORCH_RESULT {"torch": ..., "blas": ..., "stepS": ..., "tokensPerS": ..., "peakRssGb": ..., "losses": [...]}
"""
import json, os, resource, struct, sys, time

import numpy as np
import torch
import torch.nn.functional as F


def load_weights(d):
    files = []
    idx = os.path.join(d, 'model.safetensors.index.json')
    if os.path.exists(os.path.join(d, 'model.safetensors')):
        files = ['model.safetensors']
    else:
        files = sorted(set(json.load(open(idx))['weight_map'].values()))
    out = {}
    for fn in files:
        with open(os.path.join(d, fn), 'rb') as f:
            n = struct.unpack('<Q', f.read(8))[0]
            header = json.loads(f.read(n))
            base = 8 + n
            for name, v in header.items():
                if name == '__metadata__':
                    continue
                s, e = v['data_offsets']
                f.seek(base + s)
                raw = f.read(e - s)
                if v['dtype'] == 'BF16':
                    a = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
                elif v['dtype'] == 'F32':
                    a = np.frombuffer(raw, dtype=np.float32)
                elif v['dtype'] == 'F16':
                    a = np.frombuffer(raw, dtype=np.float16).astype(np.float32)
                else:
                    raise SystemExit(f'{fn}: {name} has unsupported dtype {v["dtype"]}')
                out[name] = torch.from_numpy(a.reshape(v['shape']).copy())
    return out


def main():
    d, B, L, threads, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    budget = float(sys.argv[6]) if len(sys.argv) > 6 else float('inf')
    torch.set_num_threads(threads)
    cfg = json.load(open(os.path.join(d, 'config.json')))
    P = {k: torch.nn.Parameter(v) for k, v in load_weights(d).items()}
    D, H = cfg['d_model'], cfg['n_heads']
    KV = cfg.get('n_kv_heads') or H
    hd = D // H
    eps = cfg.get('rms_norm_eps', 1e-5)
    V = cfg.get('embedding_size') or cfg['vocab_size']
    mask_id = cfg.get('mask_token_id', 126336)
    inv = 1.0 / (cfg.get('rope_theta', 10000.0) ** (torch.arange(0, hd, 2, dtype=torch.float) / hd))
    f = torch.einsum('i,j->ij', torch.arange(L, dtype=torch.float), inv)
    pos = torch.cat([f, f], -1)
    sin, cos = pos.sin(), pos.cos()
    pre = 'model.transformer.'
    head = P[pre + ('wte.weight' if cfg.get('weight_tying') else 'ff_out.weight')]

    def rms(x, w):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    def rope(x):
        x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, V, (B, L), generator=g)
    masked = torch.rand((B, L), generator=g) < 0.5
    labels = torch.where(masked, ids, torch.full_like(ids, -100))
    inputs = torch.where(masked, torch.full_like(ids, mask_id), ids)

    def forward():
        x = P[pre + 'wte.weight'][inputs]
        for i in range(cfg['n_layers']):
            b = pre + f'blocks.{i}.'
            h = rms(x, P[b + 'attn_norm.weight'])
            q = (h @ P[b + 'q_proj.weight'].T).view(B, L, H, hd).transpose(1, 2)
            k = (h @ P[b + 'k_proj.weight'].T).view(B, L, KV, hd).transpose(1, 2)
            v = (h @ P[b + 'v_proj.weight'].T).view(B, L, KV, hd).transpose(1, 2)
            if KV != H:
                k = k.repeat_interleave(H // KV, 1)
                v = v.repeat_interleave(H // KV, 1)
            a = torch.softmax(rope(q) @ rope(k).transpose(-1, -2) / hd ** 0.5, -1) @ v
            x = x + a.transpose(1, 2).reshape(B, L, D) @ P[b + 'attn_out.weight'].T
            h = rms(x, P[b + 'ff_norm.weight'])
            x = x + (F.silu(h @ P[b + 'ff_proj.weight'].T) * (h @ P[b + 'up_proj.weight'].T)) @ P[b + 'ff_out.weight'].T
        return rms(x, P[pre + 'ln_f.weight']) @ head.T

    opt = torch.optim.AdamW(P.values(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    times, losses = [], []
    start = time.perf_counter()
    for i in range(steps + 1):
        if i >= 2 and time.perf_counter() - start > budget:
            break
        t = time.perf_counter()
        logits = forward()
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(P.values(), 4.0)
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t)
        losses.append(loss.item())
        del logits, loss
        print('TORCH_STEP ' + json.dumps({'step': i, 's': times[-1], 'loss': losses[-1]}), flush=True)
    timed = sorted(times[1:])
    step = timed[len(timed) // 2]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    result = {'torch': torch.__version__, 'blas': blas_library(), 'stepS': step, 'firstStepS': times[0], 'timedSteps': len(timed), 'tokensPerS': B * L / step, 'peakRssGb': rss, 'losses': losses}
    print('TORCH_RESULT ' + json.dumps(result), flush=True)


def blas_library():
    """The BLAS shared object this process loaded: fp32 matmuls run on it, and
    Debian's default (netlib reference BLAS) is ~7x slower than OpenBLAS."""
    with open('/proc/self/maps') as f:
        libs = {l.split()[-1] for l in f if 'blas' in l.rsplit('/', 1)[-1]}
    return sorted(os.path.realpath(l) for l in libs)[0] if libs else 'unknown'


main()
