"""Plain-NumPy reference of the geometry/coreset algorithms, for benchmarks only.

Same algorithms, same tolerances and same stopping rules as ``jaxprune.geometry`` /
``jaxprune.coreset`` (whitened affine frame, Kumar–Yıldırım start, Khachiyan with
Todd–Yıldırım away steps and Sherman–Morrison updates, Wolfe min-norm point, Carathéodory,
Algorithm 1 and the peeling of Algorithm 2), written the way a careful NumPy user would:
vectorised over points, Python loops only over iterations.
"""
from __future__ import annotations

import numpy as np


def frame(P, mask, rtol=1e-7):
    n, d = P.shape
    cnt = max(mask.sum(), 1)
    z = P[mask].mean(0) if mask.any() else np.zeros(d)
    A = (P - z) * mask[:, None]
    lam, V = np.linalg.eigh(A.T @ A)
    lam, V = lam[::-1], V[:, ::-1]
    sv = np.sqrt(np.maximum(lam, 0))
    scale = np.abs(P[mask]).max() if mask.any() else 0.0
    floor = 1e4 * np.finfo(float).eps * scale * np.sqrt(cnt)
    r = int(np.sum((sv > rtol * sv[0]) & (sv > floor)))
    piv = V[np.argmax(np.abs(V), axis=0), np.arange(d)]
    V = V * np.where(piv < 0, -1.0, 1.0)
    Y = (A @ V[:, :r]) / sv[:r] * np.sqrt(cnt)
    out = np.zeros((n, d))
    out[:, :r] = Y
    return out, r


def ky_init(Y, mask, r):
    n, d = Y.shape
    u = np.zeros(n)
    if r == 0:
        u[np.argmax(mask)] = 1.0
        return u
    B = np.zeros((d, 0))
    act = np.diag((np.arange(d) < r).astype(float))
    for _ in range(r):
        pc = act - B @ B.T
        b = pc[:, np.argmax(np.diag(pc))]
        b /= np.linalg.norm(b)
        t = Y @ b
        ip = np.argmax(np.where(mask, t, -np.inf))
        im = np.argmin(np.where(mask, t, np.inf))
        delta = pc @ (Y[ip] - Y[im])
        B = np.hstack([B, (delta / np.linalg.norm(delta))[:, None]])
        u[ip] += 1
        u[im] += 1
    return u / u.sum()


def khachiyan(Y, mask, r, tol, max_iter=20_000):
    n, d = Y.shape
    Q = np.hstack([Y, np.ones((n, 1))])
    reg = np.append((np.arange(d) >= r).astype(float), 0.0)
    D = r + 1.0
    u = ky_init(Y, mask, r)
    Xinv = np.linalg.inv(Q.T @ (u[:, None] * Q) + np.diag(reg))
    M = np.einsum("ij,jk,ik->i", Q, Xinv, Q)
    it = 0
    while it < max_iter:
        mp = np.where(mask, M, -np.inf)
        jp = int(np.argmax(mp))
        ep = mp[jp] / D - 1
        mm = np.where(mask & (u > 0), M, np.inf)
        jm = int(np.argmin(mm))
        em = 1 - mm[jm] / D
        if ep <= tol and em <= tol:
            break
        fw = ep >= em
        j = jp if fw else jm
        kap = M[j]
        alpha = (kap - D) / (D * (kap - 1)) if kap != 1 else -np.inf
        drop = False
        if not fw:
            amin = -u[j] / (1 - u[j])
            if alpha <= amin:
                alpha, drop = amin, True
        u *= 1 - alpha
        u[j] += alpha
        if drop:
            u[j] = 0.0
        np.maximum(u, 0, out=u)
        w = Xinv @ Q[j]
        z = Q @ w
        g = alpha / (1 - alpha + alpha * kap)
        Xinv = (Xinv - g * np.outer(w, w)) / (1 - alpha)
        M = (M - g * z * z) / (1 - alpha)
        it += 1
    return u, it


def ellipsoid(Y, mask, r, u):
    d = Y.shape[1]
    act = (np.arange(d) < r).astype(float)
    c = u @ Y
    Yc = (Y - c) * act
    S = Yc.T @ (u[:, None] * Yc)
    Sinv = np.linalg.inv(S + np.diag(1 - act)) * np.outer(act, act)
    dist = np.einsum("ij,jk,ik->i", Yc, Sinv, Yc)
    return c, S, dist[mask].max(), dist[mask & (u > 0)].max()


def mvee(P, tol=1e-3):
    """Returns (u, iterations) of the full-rank MVEE (same algorithm as jaxprune.geometry.mvee)."""
    mask = np.ones(len(P), bool)
    Y, r = frame(P, mask)
    return khachiyan(Y, mask, r, tol)


def mnp(Z, tol=1e-10, max_iter=500):
    """Wolfe's min-norm point of conv(Z) (rows); returns (support indices, weights)."""
    idx = [int(np.argmin(np.einsum("ij,ij->i", Z, Z)))]
    lam = np.array([1.0])
    x = Z[idx[0]].copy()
    for _ in range(max_iter):
        g = Z @ x
        j = int(np.argmin(g))
        if x @ x - g[j] <= 0.5 * tol * tol or x @ x <= tol * tol or j in idx:
            break
        idx.append(j)
        lam = np.append(lam, 0.0)
        while True:
            Zc = Z[idx]
            k = len(idx)
            A = np.zeros((k + 1, k + 1))
            A[:k, :k] = Zc @ Zc.T
            A[:k, k] = A[k, :k] = 1.0
            rhs = np.zeros(k + 1)
            rhs[k] = 1.0
            alpha = np.linalg.solve(A, rhs)[:k]
            if np.all(alpha > 1e-12):
                lam = alpha
                x = lam @ Zc
                break
            neg = alpha <= 1e-12
            ratio = np.where(neg, lam / np.where(neg, lam - alpha, 1.0), np.inf)
            t = int(np.argmin(ratio))
            theta = min(max(ratio[t], 0.0), 1.0)
            lam = theta * alpha + (1 - theta) * lam
            lam[t] = 0.0
            keep = lam > 0
            idx = [i for i, kk in zip(idx, keep) if kk]
            lam = lam[keep] / lam[keep].sum()
            x = lam @ Z[idx]
    return np.array(idx), lam


def caratheodory(P, w, r):
    """Reduce support to ≤ r+1 (points already in the r-dim frame)."""
    w = w.copy()
    while np.count_nonzero(w) > r + 1:
        idx = np.flatnonzero(w)[: r + 2]
        L = np.vstack([P[idx][:, :r].T, np.ones(r + 2)])
        v = np.linalg.svd(L)[2][-1]
        if v.max() < -v.min():
            v = -v
        pos = v > 1e-12 * np.abs(v).max()
        ratio = np.where(pos, w[idx] / np.where(pos, v, 1), np.inf)
        t = int(np.argmin(ratio))
        new = np.maximum(w[idx] - ratio[t] * v, 0)
        new[t] = 0
        w[idx] = new
    return w


def linf_coreset(P, mask, tol=1e-3, n_cand=None):
    n, d = P.shape
    Y, r = frame(P, mask)
    S = np.zeros(n, bool)
    if r == 0:
        S[np.argmax(mask)] = True
        return S, r
    u, _ = khachiyan(Y, mask, r, tol)
    K = min(n, n_cand or ((d + 1) * (d + 2) // 2 + 2 * d + 16))
    cand = np.argsort(-u, kind="stable")[:K]
    ur = np.zeros(n)
    ur[cand] = u[cand]
    ur /= ur.sum()
    c, Sm, _, r_in = ellipsoid(Y, mask, r, ur)
    lam, V = np.linalg.eigh(Sm[:r, :r])
    cand = cand[mask[cand] & (u[cand] > 0)]
    Pc = Y[cand]
    for j in range(r):
        a = np.zeros(d)
        a[:r] = V[:, j] * np.sqrt(lam[j] / r_in)
        for v in (c + a, c - a):
            idx, lamw = mnp(Pc - v)
            w = np.zeros(len(cand))
            w[idx] = lamw
            w = caratheodory(Pc, w, r)
            S[cand[w > 0]] = True
    return S & mask, r


def sensitivities(P, tol=2e-2):
    """Algorithm 2 peeling (same rules as jaxprune.coreset.sensitivities)."""
    n = len(P)
    Q = np.ones(n, bool)
    s = np.zeros(n)
    layer = np.zeros(n, int)
    i = 1
    r = frame(P, Q)[1]
    while Q.sum() > 0 and Q.sum() >= 2 * max(r, 1) ** 2 and i <= n:
        S, _ = linf_coreset(P, Q, tol)
        s[S] = 2 * max(r, 1) ** 1.5 / i
        layer[S] = i
        Q &= ~S
        i += 1
        r = frame(P, Q)[1]
    s[Q] = 2 * max(r, 1) ** 1.5 / i
    layer[Q] = i
    return s, layer
