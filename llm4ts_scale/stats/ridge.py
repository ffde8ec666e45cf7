"""Ridge regression solved exactly, with its penalties chosen on a validation set.

Used twice: by the `rlinear` baseline (RevIN + one [L -> H] linear map) and by exact linear probing
(the forecasting head fitted on frozen LLM features). Both fit a linear map from a design made of
up to two blocks to an H-dimensional target:

    u [n, Pu]  the "linear" block: the RevIN-normalized look-back z plus a constant 1 (intercept), then
               the covariates' features when the data has covariates (llm4ts_scale/core/covariates.py);
    h [n, Ph]  the "llm" block: the flattened hidden states of the backbone [T * D].

and minimize   |u Wu + h Wh - t|^2 + lu * |Wu_z|^2 + lc * |Wu_c|^2 + lh * |Wh|^2   (the intercept is not
penalized; the covariates' weights Wu_c get their own penalty lc, chosen on validation like the others by a
coordinate search: lu at a start lc, then lc, then lu again).

What the solver needs from the data are sums over samples (the Gram blocks A = u'u, B = u'h,
C = h'h and the cross terms u't, h't), so ranks add theirs and every rank solves the same system:
the head does not depend on the world size. Penalties are given relative to the block's scale
(lambda = alpha * mean of the block Gram's diagonal), so one grid of alphas fits any feature size.

Cost, and how it scales (F = Ph, the llm block's width; N the training samples; at SmolLM2 K=6, L=336:
F = 42 x 576 = 24,192, and ETTh1 at 10 % has N = 5,145):
- F <= N (`PrimalBlock`): the Gram C (F x F, float64) is accumulated; each candidate lh costs one
  Cholesky of C + lh I (F^3 / 3 flops).
- N < F (`DualBlock`, the few-shot case): the kernel K = h h' (N x N) of the training rows, gathered on
  every rank; each lh costs one Cholesky of K + lh I (N^3 / 3): a second for ETTh1 at 10 %, where the
  Gram would cost a minute and a half per candidate.
- either way every lu then costs only a (Pu x Pu) solve through the Schur complement, and the validation
  error of every pair comes from the held validation features.
- both N and F above `max_gram_features` (a 7B-shaped backbone has 42 x 4096 = 172k features, on full
  data): no N x N or F x F matrix is formed; conjugate gradient runs on the operator v -> h'(h v), summed
  across ranks each iteration, over the cached features (`ConjugateGradientRidge`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

# Relative penalties tried: a decade grid; the llm block gets a half-decade refinement around its best.
LINEAR_ALPHAS = tuple(10.0 ** (k / 2) for k in range(-16, 5))  # 1e-8 .. 1e2, every half decade (cheap)
LLM_ALPHAS = tuple(10.0 ** k for k in range(-4, 5))  # 1e-4 .. 1e4: one Cholesky each
EDGE_EXTENSIONS = 3  # decades tried past an end of LLM_ALPHAS when the best lies there
FLUSH_ROWS = 8192  # float32 partial Gram sums are added into the float64 totals every this many rows

Reduce = Callable[[torch.Tensor], torch.Tensor]  # sums a tensor across ranks (identity on one process)


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


def with_intercept(z: torch.Tensor) -> torch.Tensor:
    """[n, L] -> [n, L + 1]: the linear block with its constant column last."""
    return torch.cat([z, torch.ones(z.shape[0], 1, dtype=z.dtype, device=z.device)], dim=1)


class GramAccumulator:
    """Running sums u'u, u'h, h'h, u't, h't, t't over batches of samples.

    Products are taken in float32 (twice as fast as float64 on a CPU; float64 where an input is) into
    partial sums that are flushed into float64 totals every FLUSH_ROWS rows, which bounds the rounding
    of a sum of many terms. Either block may be absent (rlinear has no llm block, a flatten head no
    linear block); with `llm_gram=False` h'h is not formed (conjugate gradient), only its diagonal.
    """

    def __init__(self, linear_dim: int, llm_dim: int, out_dim: int, llm_gram: bool = True, n_cov: int = 0):
        self.dims = (linear_dim, llm_dim, out_dim)
        self.llm_gram = llm_gram
        self.n_cov = n_cov  # the last n_cov columns of the linear block are covariate features
        self.count = 0
        self._rows = 0
        self.totals: dict[str, torch.Tensor] = {}
        self._parts: dict[str, torch.Tensor] = {}

    def _add(self, key: str, a: torch.Tensor, b: torch.Tensor | None) -> None:
        dtype = torch.float64 if torch.float64 in (a.dtype, getattr(b, "dtype", None)) else torch.float32
        if b is None:  # column sums of squares [P, 1]
            value = (a.to(dtype) ** 2).sum(dim=0, keepdim=True).T
            part = self._parts.setdefault(key, torch.zeros(value.shape, dtype=dtype, device=a.device))
            part.add_(value)
            return
        part = self._parts.setdefault(key, torch.zeros(a.shape[1], b.shape[1], dtype=dtype, device=a.device))
        part.addmm_(a.to(dtype).T, b.to(dtype))

    def update(self, u: torch.Tensor | None, h: torch.Tensor | None, t: torch.Tensor) -> None:
        if u is not None:
            self._add("uu", u, u)
            self._add("ut", u, t)
        if h is not None:
            self._add("ht", h, t)
            if self.llm_gram:
                self._add("hh", h, h)
            else:
                self._add("hd", h, None)
            if u is not None:
                self._add("uh", u, h)
        tt = (t.double() ** 2).sum()
        self.totals["tt"] = self.totals.get("tt", torch.zeros((), dtype=torch.float64, device=t.device)) + tt
        self.count += t.shape[0]
        self._rows += t.shape[0]
        if self._rows >= FLUSH_ROWS:
            self._flush()

    def _flush(self) -> None:
        for key, part in self._parts.items():
            if key not in self.totals:
                self.totals[key] = torch.zeros(part.shape, dtype=torch.float64, device=part.device)
            self.totals[key].add_(part)
            part.zero_()
        self._rows = 0

    def finish(self, reduce: Reduce = _identity) -> RidgeSystem:
        """Totals summed across ranks (every rank gets the same system)."""
        self._flush()
        self._parts.clear()
        lu, lh, out = self.dims
        shapes = {"uu": (lu, lu), "uh": (lu, lh), "ut": (lu, out), "ht": (lh, out), "tt": ()}
        shapes.update({"hh": (lh, lh)} if self.llm_gram else {"hd": (lh, 1)})
        keys = [k for k in shapes if (lu or "u" not in k) and (lh or "h" not in k)]
        device = next(iter(self.totals.values())).device if self.totals else torch.device("cpu")
        tensors = {k: reduce(self.totals.get(k, torch.zeros(shapes[k], dtype=torch.float64, device=device)))
                   for k in keys}
        count = reduce(torch.tensor(float(self.count), dtype=torch.float64, device=device))
        self.totals.clear()
        diag = tensors["hd"][:, 0] if "hd" in tensors else (torch.diagonal(tensors["hh"]).clone() if "hh" in tensors else None)
        return RidgeSystem(A=tensors.get("uu"), B=tensors.get("uh"), C=tensors.get("hh"), bu=tensors.get("ut"),
                           bh=tensors.get("ht"), tt=float(tensors["tt"]), count=int(round(float(count))), diag_h=diag,
                           n_cov=self.n_cov)


@dataclass
class RidgeSystem:
    """The normal equations of one training set (float64), block by block; None for an absent block."""

    A: torch.Tensor | None  # u'u [Pu, Pu]
    B: torch.Tensor | None  # u'h [Pu, Ph]
    C: torch.Tensor | None  # h'h [Ph, Ph]; None when not formed (conjugate gradient)
    bu: torch.Tensor | None  # u't [Pu, H]
    bh: torch.Tensor | None  # h't [Ph, H]
    tt: float
    count: int
    diag_h: torch.Tensor | None = None  # diagonal of h'h [Ph]
    n_cov: int = 0  # the linear block ends with this many covariate features (after the intercept)

    @property
    def intercept(self) -> int:
        """Index of the constant column in the linear block (after z, before the covariates)."""
        return self.A.shape[0] - 1 - self.n_cov

    def scale(self, block: str) -> float:
        """Mean diagonal of a block's Gram (linear: z's part, cov: the covariates', llm): the unit relative
        penalties are given in."""
        if block == "linear":
            diag = torch.diagonal(self.A)[:self.intercept]
        elif block == "cov":
            diag = torch.diagonal(self.A)[self.intercept + 1:]
        else:
            diag = self.diag_h
        value = float(diag.mean()) if diag is not None and diag.numel() else 1.0
        return value if value > 0 else 1.0

    def linear_penalty(self, lam: float, lam_cov: float | None = None) -> torch.Tensor:
        """Diagonal penalty of the linear block: lam on z's weights, none on the intercept, lam_cov on the
        covariates' (lam when not given)."""
        pen = torch.full((self.A.shape[0],), lam, dtype=torch.float64, device=self.A.device)
        pen[self.intercept] = 0.0
        if self.n_cov and lam_cov is not None:
            pen[self.intercept + 1:] = lam_cov
        return pen


@dataclass
class RidgeFit:
    """A solved head: weights of each block (None when absent), the penalties (absolute and relative)
    and the validation curve the choice was made on."""

    Wu: torch.Tensor | None
    Wh: torch.Tensor | None
    alpha_linear: float | None
    alpha_llm: float | None
    val_mse: float
    search: list[dict] = field(default_factory=list)  # every candidate tried: alphas and validation MSE
    train_mse: float = float("nan")  # of the fit, in the head's units
    alpha_cov: float | None = None  # the covariates' penalty (relative), when the data has covariates


class ValidationSet:
    """This rank's validation design (u, h, target); squared errors are summed across ranks.

    `scale` [n, 1] (the windows' RevIN std) maps an error in normalized units back to the data's
    standardized scale, so a penalty is chosen on the very metric the model is validated on, while the
    fit itself stays unweighted in normalized units (which validated better for rlinear on ETTh1)."""

    def __init__(self, u: torch.Tensor | None, h: torch.Tensor | None, t: torch.Tensor, reduce: Reduce = _identity,
                 scale: torch.Tensor | None = None):
        self.u = u.double() if u is not None else None
        self.h = h
        self.t = t.double()
        self.scale = scale.double() if scale is not None else None
        self.reduce = reduce
        self.count = int(round(float(reduce(torch.tensor(float(t.shape[0]), dtype=torch.float64)))))

    def h_times(self, m: torch.Tensor) -> torch.Tensor:
        """h @ m in float64 (h is held in float32)."""
        return rows_times(self.h, m)

    def mse_of(self, pred: torch.Tensor) -> float:
        err = pred - self.t
        if self.scale is not None:
            err = err * self.scale
        sse = (err ** 2).sum() if err.numel() else torch.zeros((), dtype=torch.float64)
        return float(self.reduce(sse.reshape(1))[0]) / max(self.count * self.t.shape[1], 1)


def rows_times(a: torch.Tensor, m: torch.Tensor, block: int = 4096) -> torch.Tensor:
    """a @ m in float64, `block` rows of a at a time: no float64 copy of a whole feature matrix."""
    if a.shape[0] == 0:
        return torch.zeros(0, m.shape[1], dtype=torch.float64, device=m.device)
    return torch.cat([a[s:s + block].double() @ m for s in range(0, a.shape[0], block)])


def _cholesky(matrix: torch.Tensor) -> torch.Tensor:
    """Cholesky factor; a matrix that is not numerically positive definite gets a tiny jitter."""
    factor, info = torch.linalg.cholesky_ex(matrix)
    jitter = 1e-12 * float(torch.diagonal(matrix).abs().mean() or 1.0)
    while int(info) != 0:
        matrix = matrix + jitter * torch.eye(matrix.shape[0], dtype=matrix.dtype, device=matrix.device)
        factor, info = torch.linalg.cholesky_ex(matrix)
        jitter *= 100
    return factor


def solve_linear(system: RidgeSystem, lam: float, lam_cov: float | None = None) -> torch.Tensor:
    """Wu for the linear block alone (rlinear)."""
    factor = _cholesky(system.A + torch.diag(system.linear_penalty(lam, lam_cov)))
    return torch.cholesky_solve(system.bu, factor)


COV_START_ALPHA = 1.0  # the covariates' relative penalty while the first lu sweep runs


def search_linear(solve: Callable, system: RidgeSystem, grid, fixed_cov: float | None = None,
                  cov_grid=LINEAR_ALPHAS) -> tuple[list[tuple], tuple]:
    """Validation search of the linear block's relative penalties. `solve(alpha_u, alpha_c)` -> (val mse, Wu).
    Without covariates: every alpha_u of `grid`. With them, a coordinate search: alpha_u over `grid` at a start
    alpha_c, alpha_c over `cov_grid` (unless fixed) at the best alpha_u, then alpha_u again. Returns (every
    (alpha_u, alpha_c, mse, Wu) tried, the best of them)."""
    tried: list[tuple] = []

    def sweep(pairs):
        for a_u, a_c in pairs:
            mse, Wu = solve(a_u, a_c)
            tried.append((a_u, a_c, mse, Wu))
        return min(tried, key=lambda r: r[2])

    if not system.n_cov:
        return tried, sweep((a, None) for a in grid)
    a_c = fixed_cov if fixed_cov is not None else COV_START_ALPHA
    best = sweep((a, a_c) for a in grid)
    if fixed_cov is None:
        best = sweep((best[0], c) for c in cov_grid if c != a_c)
        if len(grid) > 1:
            best = sweep((a, best[1]) for a in grid if a != best[0])
    return tried, best


def fit_linear(system: RidgeSystem, val: ValidationSet, alphas=LINEAR_ALPHAS, fixed: float | None = None,
               fixed_cov: float | None = None) -> RidgeFit:
    """rlinear: the linear block alone, lu (and the covariates' lc) chosen on validation (or `fixed`, relative)."""
    scale, scale_c = system.scale("linear"), system.scale("cov")

    def solve(a_u, a_c):
        Wu = solve_linear(system, a_u * scale, a_c * scale_c if a_c is not None else None)
        return val.mse_of(val.u @ Wu), Wu

    tried, (alpha, alpha_c, mse, Wu) = search_linear(solve, system, [fixed] if fixed is not None else alphas, fixed_cov)
    return RidgeFit(Wu=Wu, Wh=None, alpha_linear=alpha, alpha_llm=None, val_mse=mse, alpha_cov=alpha_c,
                    search=[{"alpha_linear": a, **({"alpha_cov": c} if c is not None else {}), "val_mse": m}
                            for a, c, m, _ in tried])


@dataclass
class Reduced:
    """The llm block eliminated for one penalty lh (Schur complement), leaving a small problem in Wu:
        S0 = A - B (C + lh)^-1 B',  r0 = bu - B (C + lh)^-1 bh            (Pu x Pu, Pu x H)
        validation forecast = (u - val_M) Wu + val_m,  val_M = h (C + lh)^-1 B',  val_m = h (C + lh)^-1 bh
        Wh = weights(Wu) = (C + lh)^-1 (bh - B' Wu)
    Without a linear block only val_m and weights(None) are set."""

    val_m: torch.Tensor
    weights: Callable[[torch.Tensor | None], torch.Tensor]
    S0: torch.Tensor | None = None
    r0: torch.Tensor | None = None
    val_M: torch.Tensor | None = None


class PrimalBlock:
    """The llm block through its Gram C = h'h (F x F): the choice when F <= the training samples."""

    method = "cholesky (features' Gram)"

    def __init__(self, system: RidgeSystem, val: ValidationSet):
        self.system, self.val = system, val
        self.factor = torch.empty_like(system.C)  # one F x F buffer, factored in place for every penalty

    def _factor(self, lam: float) -> torch.Tensor:
        """Cholesky factor of C + lam I in self.factor (no second F x F matrix: 4.7 GB at F = 24k)."""
        info = torch.empty((), dtype=torch.int32, device=self.factor.device)
        jitter = 0.0
        for _ in range(8):
            self.factor.copy_(self.system.C)
            self.factor.diagonal().add_(lam + jitter)
            torch.linalg.cholesky_ex(self.factor, out=(self.factor, info))
            if int(info) == 0:
                return self.factor.tril_()
            jitter = max(jitter * 100, 1e-12 * float(self.system.diag_h.mean()))
        raise RuntimeError("the features' Gram is not positive definite even with jitter; raise the penalties")

    def reduced(self, lam: float) -> Reduced:
        s = self.system
        factor = self._factor(lam)
        if s.A is None:
            m = torch.cholesky_solve(s.bh, factor)
            return Reduced(val_m=self.val.h_times(m), weights=lambda _: m)
        solved = torch.cholesky_solve(torch.cat([s.B.T, s.bh], dim=1), factor)
        pu = s.A.shape[0]
        M, m = solved[:, :pu], solved[:, pu:]
        return Reduced(val_m=self.val.h_times(m), weights=lambda Wu: m - M @ Wu, S0=s.A - s.B @ M,
                       r0=s.bu - s.B @ m, val_M=self.val.h_times(M))

    def train_mse(self, fit: RidgeFit) -> float:
        s = self.system
        W = fit.Wh if fit.Wu is None else torch.cat([fit.Wu, fit.Wh])
        G = s.C if fit.Wu is None else torch.cat([torch.cat([s.A, s.B], 1), torch.cat([s.B.T, s.C], 1)])
        b = s.bh if fit.Wu is None else torch.cat([s.bu, s.bh])
        return (float((W * (G @ W)).sum() - 2 * (W * b).sum()) + s.tt) / max(s.count * W.shape[1], 1)


class DualBlock:
    """The llm block through the kernel K = h h' (N x N) of the training samples: the choice when there are
    fewer samples than features (few-shot data: 5,145 samples against 24,192 features at ETTh1 10 %).
    The same Schur quantities, by the push-through identity (C + lh)^-1 h' = h' (K + lh)^-1:
        S0 = lh u'(K + lh)^-1 u,  r0 = lh u'(K + lh)^-1 t,  Wh = h'(K + lh)^-1 (t - u Wu).
    Needs every training row on every rank (gathered once): N x F floats."""

    method = "cholesky (samples' kernel)"

    def __init__(self, train_u: torch.Tensor | None, train_h: torch.Tensor, train_t: torch.Tensor, val: ValidationSet):
        self.u = train_u.double() if train_u is not None else None
        self.h, self.t = train_h, train_t.double()
        hd = train_h.double()  # float64 once, for the two kernels
        self.K = hd @ hd.T
        self.val_K = val.h_times(hd.T)  # validation rows x training rows
        del hd
        self.eye = torch.eye(self.K.shape[0], dtype=torch.float64, device=self.K.device)

    def _h_transpose_times(self, beta: torch.Tensor) -> torch.Tensor:
        """h' beta in float64, a block of rows at a time."""
        out = torch.zeros(self.h.shape[1], beta.shape[1], dtype=torch.float64, device=beta.device)
        for start in range(0, self.h.shape[0], 4096):
            out += self.h[start:start + 4096].double().T @ beta[start:start + 4096]
        return out

    def reduced(self, lam: float) -> Reduced:
        factor = _cholesky(self.K + lam * self.eye)
        if self.u is None:
            beta = torch.cholesky_solve(self.t, factor)
            return Reduced(val_m=self.val_K @ beta, weights=lambda _: self._h_transpose_times(beta))
        solved = torch.cholesky_solve(torch.cat([self.u, self.t], dim=1), factor)
        pu = self.u.shape[1]
        Pu, Pt = solved[:, :pu], solved[:, pu:]
        return Reduced(val_m=self.val_K @ Pt, weights=lambda Wu: self._h_transpose_times(Pt - Pu @ Wu),
                       S0=lam * self.u.T @ Pu, r0=lam * self.u.T @ Pt, val_M=self.val_K @ Pu)

    def train_mse(self, fit: RidgeFit) -> float:
        pred = rows_times(self.h, fit.Wh) + (self.u @ fit.Wu if fit.Wu is not None else 0)
        return float(((pred - self.t) ** 2).mean())


def _refined(best: float, grid) -> list[float]:
    """Half-decade neighbours of the best grid point (not already tried)."""
    return [a for a in (best / math.sqrt(10), best * math.sqrt(10)) if all(abs(math.log10(a / g)) > 1e-9 for g in grid)]


def fit_direct(system: RidgeSystem, val: ValidationSet, block: PrimalBlock | DualBlock | None = None, *,
               fixed_linear: float | None = None, fixed_llm: float | None = None, fixed_cov: float | None = None,
               progress: Callable[[str], None] | None = None) -> RidgeFit:
    """Exact ridge with an llm block (and optionally a linear block), every candidate pair scored on
    validation: one factorization per lh (`block.reduced`), then every lu through the small Schur system
    (S0 + Lu) Wu = r0. The lh grid goes a decade further while its best lies at an end, then half a decade
    either side of the best."""
    block = block or PrimalBlock(system, val)
    llm_grid = [fixed_llm] if fixed_llm is not None else list(LLM_ALPHAS)
    lin_grid = [fixed_linear] if fixed_linear is not None else list(LINEAR_ALPHAS)
    scale_h = system.scale("llm")
    scale_u = system.scale("linear") if system.A is not None else 1.0
    scale_c = system.scale("cov") if system.A is not None else 1.0
    tried: list[dict] = []
    best: tuple | None = None  # (val mse, alpha_h, alpha_u, Wu, Reduced, alpha_c): Wh is formed once, at the end

    def try_llm(alpha_h: float) -> float:
        nonlocal best
        red = block.reduced(alpha_h * scale_h)
        if system.A is None:
            mse = val.mse_of(red.val_m)
            tried.append({"alpha_llm": alpha_h, "val_mse": mse})
            if best is None or mse < best[0]:
                best = (mse, alpha_h, None, None, red, None)
            return mse

        def solve(alpha_u, alpha_c):
            pen = system.linear_penalty(alpha_u * scale_u, alpha_c * scale_c if alpha_c is not None else None)
            Wu = torch.linalg.solve(red.S0 + torch.diag(pen), red.r0)
            return val.mse_of((val.u - red.val_M) @ Wu + red.val_m), Wu

        here, (alpha_u, alpha_c, mse, Wu) = search_linear(solve, system, lin_grid, fixed_cov)
        tried.extend({"alpha_linear": a, **({"alpha_cov": c} if c is not None else {}), "alpha_llm": alpha_h,
                      "val_mse": m} for a, c, m, _ in here)
        if best is None or mse < best[0]:
            best = (mse, alpha_h, alpha_u, Wu, red, alpha_c)
        return mse

    def report(alpha_h, mse, note):
        if progress:
            progress(f"ridge: llm penalty {alpha_h:.2g} ({note}): best val mse {mse:.5f}")

    for i, alpha_h in enumerate(llm_grid):
        report(alpha_h, try_llm(alpha_h), f"{i + 1}/{len(llm_grid)}")
    if fixed_llm is None:
        for _ in range(EDGE_EXTENSIONS):  # the best at an end of the grid: go on a decade further
            if best[1] not in (min(llm_grid), max(llm_grid)):
                break
            alpha_h = best[1] * (10.0 if best[1] == max(llm_grid) else 0.1)
            llm_grid.append(alpha_h)
            report(alpha_h, try_llm(alpha_h), "beyond the grid")
        for alpha_h in _refined(best[1], llm_grid):
            report(alpha_h, try_llm(alpha_h), "refinement")
    mse, alpha_h, alpha_u, Wu, red, alpha_c = best
    fit = RidgeFit(Wu=Wu, Wh=red.weights(Wu), alpha_linear=alpha_u, alpha_llm=alpha_h, val_mse=mse, search=tried,
                   alpha_cov=alpha_c)
    fit.train_mse = block.train_mse(fit)
    return fit


class ConjugateGradientRidge:
    """Ridge without forming h'h: block conjugate gradient on the normal equations, the llm block's
    Gram applied as h'(h v) over this rank's cached features and summed across ranks each iteration.

    For feature widths whose Gram does not fit (a 7B shape: 172k features). Jacobi-preconditioned; the
    linear block (small) is applied through its explicit Gram. Every rank runs the same iterations on
    the same reduced vectors, so the result does not depend on the world size beyond float rounding.
    """

    def __init__(self, system: RidgeSystem, train_h: torch.Tensor, reduce: Reduce = _identity,
                 tol: float = 1e-10, max_iter: int = 2000):
        self.system, self.train_h, self.reduce = system, train_h, reduce
        self.tol, self.max_iter = tol, max_iter
        self.diag_h = system.diag_h
        self.iterations = 0

    def _apply_h(self, v: torch.Tensor) -> torch.Tensor:
        h = self.train_h
        if h.shape[0] == 0:
            return self.reduce(torch.zeros_like(v))
        return self.reduce((h.T @ (h @ v.to(h.dtype))).double())

    def solve(self, lam_h: float, lam_u: float | None, start: torch.Tensor | None = None,
              lam_cov: float | None = None) -> tuple:
        s = self.system
        has_u = s.A is not None
        pen_u = s.linear_penalty(lam_u, lam_cov) if has_u else None
        rhs = torch.cat([s.bu, s.bh]) if has_u else s.bh
        pu = s.A.shape[0] if has_u else 0

        def apply(v):
            vu, vh = v[:pu], v[pu:]
            out_h = self._apply_h(vh) + lam_h * vh
            if not has_u:
                return out_h
            out_u = s.A @ vu + pen_u[:, None] * vu + s.B @ vh
            return torch.cat([out_u, out_h + s.B.T @ vu])

        diag = self.diag_h + lam_h
        if has_u:
            diag = torch.cat([torch.diagonal(s.A) + pen_u, diag])
        precond = 1.0 / diag[:, None]
        x = torch.zeros_like(rhs) if start is None else start.clone()
        r = rhs - apply(x)
        z = precond * r
        p = z.clone()
        rz = (r * z).sum(dim=0)
        norm_b = rhs.norm(dim=0).clamp_min(1e-300)
        for _ in range(self.max_iter):
            if bool(((r.norm(dim=0) / norm_b) < self.tol).all()):
                break
            q = apply(p)
            step = rz / (p * q).sum(dim=0).clamp_min(1e-300)
            x = x + step * p
            r = r - step * q
            z = precond * r
            rz_new = (r * z).sum(dim=0)
            p = z + (rz_new / rz.clamp_min(1e-300)) * p
            rz = rz_new
            self.iterations += 1
        return (x[:pu] if has_u else None), x[pu:]


def fit_conjugate_gradient(system: RidgeSystem, val: ValidationSet, train_h: torch.Tensor, *,
                           reduce: Reduce = _identity, fixed_linear: float | None = None,
                           fixed_llm: float | None = None, fixed_cov: float | None = None,
                           progress: Callable[[str], None] | None = None) -> RidgeFit:
    """The search of `fit_direct`, cheaper per candidate: lu (and lc) are chosen first on the linear block alone
    (rlinear's choice) and kept; lh runs down the grid, each solve warm-started from the previous one."""
    alpha_u = alpha_c = None
    if system.A is not None:
        alone = fit_linear(system, val, fixed=fixed_linear, fixed_cov=fixed_cov)
        alpha_u, alpha_c = alone.alpha_linear, alone.alpha_cov
    grid = [fixed_llm] if fixed_llm is not None else sorted(LLM_ALPHAS, reverse=True)
    cg = ConjugateGradientRidge(system, train_h, reduce)
    tried, best, start = [], None, None
    for alpha_h in grid:
        lam_u = alpha_u * system.scale("linear") if alpha_u is not None else None
        lam_c = alpha_c * system.scale("cov") if alpha_c is not None else None
        Wu, Wh = cg.solve(alpha_h * system.scale("llm"), lam_u, start, lam_cov=lam_c)
        start = torch.cat([Wu, Wh]) if Wu is not None else Wh
        pred = val.h_times(Wh) + (val.u @ Wu if Wu is not None else 0)
        mse = val.mse_of(pred)
        tried.append({"alpha_linear": alpha_u, "alpha_llm": alpha_h, "val_mse": mse, "cg_iterations": cg.iterations})
        if progress:
            progress(f"ridge (conjugate gradient): llm penalty {alpha_h:.0e}: val mse {mse:.5f} "
                     f"({cg.iterations} iterations so far)")
        if best is None or mse < best[0]:
            best = (mse, alpha_h, Wu, Wh)
    mse, alpha_h, Wu, Wh = best
    return RidgeFit(Wu=Wu, Wh=Wh, alpha_linear=alpha_u, alpha_llm=alpha_h, val_mse=mse, search=tried, alpha_cov=alpha_c)
