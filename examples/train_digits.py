"""Train a small LeNet-style CNN on scikit-learn's 8x8 digits with numbaconv's layers.

conv(1->16, 3x3, same) -> ReLU -> 2x2 max-pool -> conv(16->32, 3x3, same) -> ReLU ->
2x2 max-pool -> linear(32*2*2 -> 10), softmax cross-entropy, Adam. Everything but the
convolutions is plain NumPy. 1,797 images, 75% to train, 25% held out (stratified).

    pip install ".[examples]" && python examples/train_digits.py [--epochs 15]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import numbaconv


def load(seed):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8) in [0, 1]
    return train_test_split(x, digits.target, test_size=0.25, random_state=seed,
                            stratify=digits.target)


def maxpool2(x):
    """2x2 max-pool, stride 2; returns the output and the argmax mask for backward."""
    n, c, h, w = x.shape
    blocks = x.reshape(n, c, h // 2, 2, w // 2, 2)
    out = blocks.max(axis=(3, 5))
    mask = blocks == out[:, :, :, None, :, None]
    # Ties: keep one winner per window, so the gradient is not duplicated.
    first = np.cumsum(mask.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5)
                      .reshape(n, c, h // 2, w // 2, 4), axis=-1) == 1
    mask &= first.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5)
    return out, mask


def maxpool2_backward(grad, mask):
    return (mask * grad[:, :, :, None, :, None]).reshape(
        mask.shape[0], mask.shape[1], mask.shape[2] * 2, mask.shape[4] * 2)


class Net:
    def __init__(self, rng):
        self.conv1 = numbaconv.Conv2d(1, 16, 3, padding="same", rng=rng)
        self.conv2 = numbaconv.Conv2d(16, 32, 3, padding="same", rng=rng)
        bound = 1 / np.sqrt(32 * 2 * 2)
        self.fc_w = rng.uniform(-bound, bound, (32 * 2 * 2, 10)).astype(np.float32)
        self.fc_b = rng.uniform(-bound, bound, 10).astype(np.float32)

    def params(self):
        return [(self.conv1, "weight"), (self.conv1, "bias"), (self.conv2, "weight"),
                (self.conv2, "bias"), (self, "fc_w"), (self, "fc_b")]

    def forward(self, x):
        a1 = self.conv1(x)
        r1 = np.maximum(a1, 0)
        p1, self.m1 = maxpool2(r1)
        a2 = self.conv2(p1)
        r2 = np.maximum(a2, 0)
        p2, self.m2 = maxpool2(r2)
        self.a1, self.a2, self.flat = a1, a2, p2.reshape(len(x), -1)
        return self.flat @ self.fc_w + self.fc_b

    def backward(self, grad_logits):
        self.grad_fc_w = self.flat.T @ grad_logits
        self.grad_fc_b = grad_logits.sum(axis=0)
        g = (grad_logits @ self.fc_w.T).reshape(len(grad_logits), 32, 2, 2)
        g = maxpool2_backward(g, self.m2) * (self.a2 > 0)
        g = self.conv2.backward(g)
        g = maxpool2_backward(g, self.m1) * (self.a1 > 0)
        self.conv1.backward(g)


def cross_entropy(logits, labels):
    shifted = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(shifted)
    p /= p.sum(axis=1, keepdims=True)
    loss = -np.log(p[np.arange(len(labels)), labels] + 1e-12).mean()
    grad = p
    grad[np.arange(len(labels)), labels] -= 1
    return loss, grad / len(labels)


class Adam:
    def __init__(self, params, lr=3e-3, betas=(0.9, 0.999), eps=1e-8):
        self.params, self.lr, self.betas, self.eps, self.t = params, lr, betas, eps, 0
        self.m = [np.zeros_like(getattr(o, n)) for o, n in params]
        self.v = [np.zeros_like(getattr(o, n)) for o, n in params]

    def step(self, grads):
        self.t += 1
        b1, b2 = self.betas
        for i, ((obj, name), g) in enumerate(zip(self.params, grads)):
            self.m[i] = b1 * self.m[i] + (1 - b1) * g
            self.v[i] = b2 * self.v[i] + (1 - b2) * g * g
            m_hat = self.m[i] / (1 - b1 ** self.t)
            v_hat = self.v[i] / (1 - b2 ** self.t)
            setattr(obj, name, (getattr(obj, name) - self.lr * m_hat
                                / (np.sqrt(v_hat) + self.eps)).astype(np.float32))


def train(epochs=15, batch_size=32, seed=0, progress=True):
    """Train and evaluate; returns ``(losses per epoch, test accuracy, seconds)``."""
    rng = np.random.default_rng(seed)
    x_train, x_test, y_train, y_test = load(seed)
    net = Net(rng)
    opt = Adam(net.params())
    losses = []
    start = time.perf_counter()
    bar = _bar(epochs * int(np.ceil(len(x_train) / batch_size)), progress)
    for _ in range(epochs):
        order = rng.permutation(len(x_train))
        total = 0.0
        for i in range(0, len(order), batch_size):
            idx = order[i: i + batch_size]
            loss, grad = cross_entropy(net.forward(x_train[idx]), y_train[idx])
            net.backward(grad)
            opt.step([net.conv1.grad_weight, net.conv1.grad_bias, net.conv2.grad_weight,
                      net.conv2.grad_bias, net.grad_fc_w, net.grad_fc_b])
            total += loss * len(idx)
            if bar:
                bar.update(1)
        losses.append(total / len(x_train))
        if bar:
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    if bar:
        bar.close()
    accuracy = float((net.forward(x_test).argmax(axis=1) == y_test).mean())
    return losses, accuracy, time.perf_counter() - start


def _bar(total, enabled):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="batch")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    losses, accuracy, seconds = train(args.epochs, seed=args.seed)
    for i, loss in enumerate(losses, 1):
        print(f"epoch {i:2d}  loss {loss:.4f}")
    print(f"held-out accuracy {accuracy * 100:.2f}% ({seconds:.1f} s of training, "
          f"including kernel compilation or cache loading)")


if __name__ == "__main__":
    main()
