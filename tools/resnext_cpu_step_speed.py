"""Time one training step of the 3-expert ResNeXt-50 at 224x224 (batch 4) with LGLA + torch SGD.

  python tools/resnext_cpu_step_speed.py

Prints compile time, per-step seconds and images/s (a CPU figure for the README)."""
import time, json, numpy as np, jax, jax.numpy as jnp, optax
from lgla_jax.models import ExpertResNet
from lgla_jax import long_tail
from lgla_jax import losses
from lgla_jax import optim
B = 4
m = ExpertResNet(1000, 3, arch="resnext50_32x4d")
x = jnp.asarray(np.random.rand(B, 224, 224, 3).astype(np.float32)); y = jnp.asarray(np.random.randint(0, 1000, B))
t = time.time(); v = jax.jit(lambda: m.init(jax.random.PRNGKey(0), x[:1]))(); print('init', time.time() - t, flush=True)
counts = long_tail.imbalanced_counts(1000, 1280, 0.004)
reg = long_tail.expert_regions(counts, 3); lp = long_tail.expert_log_priors(counts, 3, 3.0)
tx = optim.torch_sgd(0.025, 0.9, True, 5e-4); opt = tx.init(v['params'])
@jax.jit
def step(p, bs, o, x, y):
    def lf(p):
        out, upd = m.apply({'params': p, 'batch_stats': bs}, x, train=True, mutable=['batch_stats'])
        return losses.lgla_expert_losses(out['logits'], y, log_priors_ExC=lp, regions_RxC=reg).sum(), upd['batch_stats']
    (l, nbs), g = jax.value_and_grad(lf, has_aux=True)(p)
    u, o = tx.update(g, o, p)
    return optax.apply_updates(p, u), nbs, o, l
p, bs = v['params'], v['batch_stats']
t = time.time(); p, bs, opt, l = step(p, bs, opt, x, y); l.block_until_ready(); print('compile+first', time.time()-t, flush=True)
ts = []
for i in range(2):
    t = time.time(); p, bs, opt, l = step(p, bs, opt, x, y); l.block_until_ready(); ts.append(time.time()-t); print('step', ts[-1], flush=True)
print(json.dumps({"resnext50_3experts_224_train_images_per_s": round(B / float(np.median(ts)), 3), "batch": B, "device": "cpu (2 cores)"}))
