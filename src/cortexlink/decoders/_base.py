"""Shared machinery of every decoder: input validation, feature layout, streaming, save/load.

Every decoder in :mod:`cortexlink.decoders` is a scikit-learn estimator built on
:class:`DecoderMixin`. The mixin provides

* ``fit`` pre-processing (:meth:`DecoderMixin._validate_fit`): accepts arrays or a
  :class:`~cortexlink.core.types.BinnedFeatures`, optional ``feature_names=`` and
  ``channel_map=``, rejects NaN/Inf and too little data with
  :class:`~cortexlink.core.errors.ValidationError`;
* ``predict`` input checks (:meth:`DecoderMixin._validate_predict`) whose wrong-feature
  error names the expected and received counts;
* the streaming contract: ``reset_state()`` and ``step(x)``, whose stacked outputs equal
  ``predict(X)``; a non-finite ``x`` holds the last output, increments
  ``n_invalid_steps_`` and clears ``last_step_valid_``;
* pickle-free persistence (``save(path)`` / :func:`load`): arrays in an ``.npz`` loaded
  with ``allow_pickle=False`` plus JSON metadata carrying a schema version, the
  hyperparameters, the feature names and the :class:`~cortexlink.core.types.ChannelMap`;
  ``load`` refuses NaN/Inf parameters and arrays whose shapes disagree (``_shapes``,
  ``_check_loaded``).
"""

from __future__ import annotations

import io
import json
import logging
import math
import numbers
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from sklearn.exceptions import NotFittedError as _SklearnNotFittedError
from sklearn.utils.validation import check_is_fitted as _sk_check_is_fitted
from sklearn.utils.validation import check_array, validate_data

from cortexlink.core.errors import ConfigError, NotFittedError, ValidationError
from cortexlink.core.jsonutil import jsonable
from cortexlink.core.types import BinnedFeatures, ChannelMap

logger = logging.getLogger(__name__)

#: Version of the on-disk layout written by ``save``; ``load`` refuses newer ones.
SCHEMA_VERSION = 1
_FORMAT = "cortexlink.decoder"
_META_KEY = "__meta__"

_REGISTRY: dict[str, type] = {}


class IncompatibleDecoderError(ValidationError):
    """A saved decoder does not match the feature layout or channel map it is used with."""


class DecoderNotFittedError(NotFittedError, _SklearnNotFittedError):
    """A decoder was used before ``fit``; both cortexlink's and scikit-learn's NotFittedError."""


def check_is_fitted(est: Any) -> None:
    """Raise :class:`DecoderNotFittedError` unless ``est`` has been fitted."""
    try:
        _sk_check_is_fitted(est)
    except _SklearnNotFittedError as exc:
        raise DecoderNotFittedError(f"{type(est).__name__} is not fitted yet; call fit(X, y) first") from exc


def register(cls: type) -> type:
    """Class decorator: make ``cls`` loadable by :func:`load` under its class name."""
    _REGISTRY[cls.__name__] = cls
    return cls


# ----------------------------------------------------------------------------- helpers

def check_n_features(name: str, expected: int, received: int) -> None:
    """Raise ValidationError if ``received != expected``.

    The message contains scikit-learn's wording (``X has N features, but NAME is
    expecting M features as input``) so that its estimator checks recognise it.
    """
    if received != expected:
        raise ValidationError(
            f"X has {received} features, but {name} is expecting {expected} features as input "
            f"(expected {expected} features per bin, received {received})")


def check_finite(name: str, arr: np.ndarray, hint: str = "") -> None:
    """Raise ValidationError naming how many NaN/Inf values ``arr`` holds."""
    if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.isfinite(arr)))
        rows = np.flatnonzero(~np.all(np.isfinite(arr.reshape(arr.shape[0], -1)), axis=1))
        raise ValidationError(f"{name} must hold only finite values; got {bad} NaN/Inf "
                              f"(first in row {int(rows[0])}){hint}")


def finite_bin(x: np.ndarray) -> bool:
    """Fast check that one bin holds no NaN/Inf (``x @ x`` is NaN or Inf otherwise; no warning)."""
    return math.isfinite(float(np.dot(x, x)))


def check_min_samples(cls_name: str, n: int, minimum: int) -> None:
    """Raise ValidationError when fewer than ``minimum`` bins were given to fit."""
    if n < minimum:
        raise ValidationError(f"{cls_name}.fit needs at least {minimum} bins; got n_samples={n} "
                              f"(too little data to estimate the model)")


def as_int_param(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    """Validate an integer hyperparameter (raises ConfigError naming it)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name} must be an integer; got {value!r} ({type(value).__name__})")
    if value < lo or (hi is not None and value > hi):
        bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ConfigError(f"{name} must be an integer {bound}; got {value!r}")
    return int(value)


def as_float_param(name: str, value: Any, lo: float | None = None, hi: float | None = None,
                   lo_open: bool = False) -> float:
    """Validate a real hyperparameter (raises ConfigError naming it)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number; got {value!r}")
    if lo is not None and (value < lo or (lo_open and value == lo)):
        raise ConfigError(f"{name} must be {'>' if lo_open else '>='} {lo}; got {value!r}")
    if hi is not None and value > hi:
        raise ConfigError(f"{name} must be <= {hi}; got {value!r}")
    return float(value)


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON values for the decoder file's metadata (NaN kept as a float)."""
    try:
        return jsonable(value)
    except TypeError as exc:
        raise TypeError(f"cannot store {type(value).__name__} in decoder metadata ({exc})") from None


def _unwrap_features(X: Any, feature_names: Sequence[str] | None) -> tuple[Any, tuple[str, ...] | None]:
    """Return (array-like, names) from an array or a BinnedFeatures."""
    if isinstance(X, BinnedFeatures):
        names = tuple(X.feature_names)
        if feature_names is not None and tuple(feature_names) != names:
            raise ValidationError("feature_names must match X.feature_names when X is a BinnedFeatures")
        return X.data, names
    return X, (None if feature_names is None else tuple(str(n) for n in feature_names))


# ----------------------------------------------------------------------------- mixin

class DecoderMixin:
    """Validation, streaming and persistence shared by every cortexlink decoder.

    Subclasses implement ``_fit_validated(X, Y)`` (X float64 bins x features, Y float64
    bins x outputs), ``_predict_validated(X, hold)`` and ``_reset_stream()`` /
    ``_step_core(x)``, and list their learned attributes in ``_persist``.
    """

    _persist: tuple[str, ...] = ()
    _min_samples: int = 2
    _stateless_params: tuple[str, ...] = ()
    #: persisted attributes that may hold NaN/Inf (fit diagnostics such as CV scores; not decoded with)
    _nonfinite_ok: tuple[str, ...] = ()
    #: shapes of persisted arrays that :func:`load` checks: space-separated dimensions, each a number,
    #: ``f`` (``n_features_in_``), ``m`` (``n_outputs_``) or the name of an integer hyperparameter
    _shapes: dict[str, str] = {}

    # -- tags ---------------------------------------------------------------------------
    def __sklearn_tags__(self):  # noqa: D105
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

    # -- validation ---------------------------------------------------------------------
    def _validate_fit(self, X: Any, y: Any, feature_names: Sequence[str] | None,
                      channel_map: ChannelMap | None, *, y_numeric: bool = True,
                      multi_output: bool = True) -> tuple[np.ndarray, np.ndarray]:
        X, names = _unwrap_features(X, feature_names)
        if y_numeric and y is not None:
            y_arr = np.asarray(y)
            if y_arr.dtype.kind in "fc":
                check_finite("y", y_arr.reshape(y_arr.shape[0], -1) if y_arr.ndim else y_arr.reshape(1, 1))
        X, y = validate_data(self, X, y, reset=True, dtype=np.float64, multi_output=multi_output,
                             y_numeric=y_numeric, ensure_all_finite=False,
                             ensure_min_samples=1)
        name = type(self).__name__
        check_finite("X", X)
        if y_numeric:
            y = np.asarray(y, dtype=np.float64)
            check_finite("y", y)
        check_min_samples(name, X.shape[0], self._min_samples)
        if names is not None and len(names) != X.shape[1]:
            raise ValidationError(f"feature_names must have {X.shape[1]} entries (one per column of X); "
                                  f"got {len(names)}")
        if channel_map is not None and not isinstance(channel_map, ChannelMap):
            raise ValidationError(f"channel_map must be a cortexlink.ChannelMap; got {type(channel_map).__name__}")
        self.feature_names_ = names
        self.channel_map_ = channel_map
        return X, y

    def _validate_predict(self, X: Any, on_invalid: str = "raise") -> np.ndarray:
        check_is_fitted(self)
        if on_invalid not in ("raise", "hold"):
            raise ConfigError(f"on_invalid must be one of ('raise', 'hold'); got {on_invalid!r}")
        X, names = _unwrap_features(X, None)
        if names is not None and self.feature_names_ is not None and names != self.feature_names_:
            raise IncompatibleDecoderError(_describe_name_mismatch(self.feature_names_, names))
        X_in = X
        X = check_array(X, dtype=np.float64, ensure_all_finite=False, input_name="X")
        check_n_features(type(self).__name__, self.n_features_in_, X.shape[1])
        if hasattr(X_in, "columns"):                                   # DataFrame column names
            validate_data(self, X_in, reset=False, skip_check_array=True)
        if on_invalid == "raise":
            check_finite("X", X, " (use on_invalid='hold' to hold the last output over such bins, "
                                 "as step() does)")
        return X

    # -- streaming ----------------------------------------------------------------------
    def reset_state(self) -> "DecoderMixin":
        """Return the streaming state to what it is before the first bin; returns self."""
        check_is_fitted(self)
        self.n_invalid_steps_ = 0
        self.last_step_valid_ = True
        self._reset_stream()
        return self

    def _check_step_input(self, x: Any) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (self.n_features_in_,):
            if x.ndim == 2 and x.shape[0] == 1:
                x = x[0]
            n = x.shape[-1] if x.ndim else 0
            if x.shape != (self.n_features_in_,):
                check_n_features(type(self).__name__, self.n_features_in_, n)
                raise ValidationError(f"x must be one bin of shape ({self.n_features_in_},); got {x.shape}")
        return x

    def _note_invalid(self) -> None:
        self.n_invalid_steps_ += 1
        self.last_step_valid_ = False
        if self.n_invalid_steps_ in (1, 10, 100, 1000) or self.n_invalid_steps_ % 10000 == 0:
            logger.warning("%s.step: non-finite input, holding the last output (%d invalid steps so far)",
                           type(self).__name__, self.n_invalid_steps_)

    # -- layout -------------------------------------------------------------------------
    def check_compatible(self, feature_names: Sequence[str] | None = None,
                         channel_map: ChannelMap | None = None, n_features: int | None = None) -> None:
        """Raise :class:`IncompatibleDecoderError` if this decoder does not fit a layout.

        Parameters
        ----------
        feature_names : sequence of str, optional
            The feature names of the data it will decode; compared name by name with
            the names it was fitted on (or only counted if it was fitted without names).
        channel_map : ChannelMap, optional
            The channel map of the implant it will run on; must equal the fitted one.
        n_features : int, optional
            The number of features per bin.
        """
        check_is_fitted(self)
        name = type(self).__name__
        if n_features is not None and int(n_features) != self.n_features_in_:
            raise IncompatibleDecoderError(f"{name} expects {self.n_features_in_} features per bin; "
                                           f"the data has {int(n_features)}")
        if feature_names is not None:
            names = tuple(str(n) for n in feature_names)
            if self.feature_names_ is None:
                if len(names) != self.n_features_in_:
                    raise IncompatibleDecoderError(f"{name} expects {self.n_features_in_} features per bin; "
                                                   f"got {len(names)} feature names")
            elif names != self.feature_names_:
                raise IncompatibleDecoderError(_describe_name_mismatch(self.feature_names_, names))
        if channel_map is not None:
            if self.channel_map_ is None:
                logger.info("%s was fitted without a channel map; cannot compare channel maps", name)
            elif channel_map != self.channel_map_:
                raise IncompatibleDecoderError(_describe_map_mismatch(self.channel_map_, channel_map))

    # -- persistence --------------------------------------------------------------------
    def _extra_state(self) -> tuple[dict, dict]:
        """(json metadata, arrays) of state not listed in ``_persist`` (subclass hook)."""
        return {}, {}

    def _restore_extra(self, meta: dict, arrays: dict) -> None:
        """Inverse of :meth:`_extra_state` (subclass hook)."""

    def _check_loaded(self) -> None:
        """Check the shapes of what :func:`load` restored against each other and the feature count
        (``_shapes``; a subclass adds its own checks): ValidationError naming what disagrees."""
        dims = {"f": self.n_features_in_}
        if hasattr(self, "n_outputs_"):
            dims["m"] = _count("n_outputs_", self.n_outputs_)
            if getattr(self, "y_ndim_", 2) not in (1, 2) or (getattr(self, "y_ndim_", 2) == 1 and dims["m"] != 1):
                raise ValidationError(f"y_ndim_ is {self.y_ndim_!r} with n_outputs_={dims['m']}; expected 2, or 1 "
                                      "with one output")
        want = {attr: tuple(int(d) if d.isdigit() else dims[d] if d in dims else int(getattr(self, d))
                            for d in spec.split()) for attr, spec in self._shapes.items()}
        check_shapes({attr: getattr(self, attr) for attr in want}, want,
                     f"(n_features_in_={dims['f']}" + (f", n_outputs_={dims['m']})" if "m" in dims else ")"))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted decoder to ``path`` (an ``.npz`` file, no pickle).

        Arrays are stored as npz members; hyperparameters, scalars, feature names, the
        channel map and the schema version as JSON in the ``__meta__`` member.

        Returns
        -------
        Path
            The path written (exactly ``path``; no suffix is appended).
        """
        check_is_fitted(self)
        path = Path(path)
        arrays: dict[str, np.ndarray] = {}
        scalars: dict[str, Any] = {}
        for attr in ("n_features_in_",) + tuple(self._persist):
            value = getattr(self, attr)
            if isinstance(value, np.ndarray):
                arrays[attr] = value
            else:
                scalars[attr] = _jsonable(value)
        extra_meta, extra_arrays = self._extra_state()
        for k, v in extra_arrays.items():
            arrays["extra/" + k] = np.asarray(v)
        from cortexlink import __version__
        meta = {
            "format": _FORMAT,
            "schema_version": SCHEMA_VERSION,
            "cortexlink_version": __version__,
            "class": type(self).__name__,
            "params": {k: _jsonable(v) for k, v in self.get_params(deep=False).items()},
            "scalars": scalars,
            "extra": _jsonable(extra_meta),
            "feature_names": None if self.feature_names_ is None else list(self.feature_names_),
            "channel_map": None if self.channel_map_ is None else self.channel_map_.to_dict(),
        }
        for k, v in list(arrays.items()):
            if v.dtype.kind == "O":
                plain = np.asarray(v.tolist())                 # e.g. labels held as Python str
                if plain.dtype.kind == "O":
                    raise TypeError(f"cannot save object array {k!r} without pickle")
                arrays[k] = plain
        buf = io.BytesIO()
        np.savez(buf, **{_META_KEY: np.array(json.dumps(meta))}, **arrays)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, path)
        logger.info("saved %s to %s", type(self).__name__, path)
        return path


def load(path: str | os.PathLike, *, expect_feature_names: Sequence[str] | None = None,
         expect_channel_map: ChannelMap | None = None, expect_n_features: int | None = None) -> Any:
    """Load a decoder written by ``decoder.save(path)``.

    Parameters
    ----------
    path : path-like
        The ``.npz`` file.
    expect_feature_names, expect_channel_map, expect_n_features : optional
        The layout the decoder will be used with; a mismatch raises
        :class:`IncompatibleDecoderError` naming the difference.

    Returns
    -------
    estimator
        The fitted decoder, with its streaming state reset.

    Raises
    ------
    ValidationError
        The file is not a cortexlink decoder, was written by a newer schema, or its parameters are
        not usable: a NaN/Inf in a fitted parameter (or a hyperparameter ``fit`` would refuse), or
        arrays whose shapes disagree with each other or with the declared feature count.
    IncompatibleDecoderError
        The decoder does not match the expected layout.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            files = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise
    except (ValueError, OSError) as exc:
        raise ValidationError(f"{path} is not a cortexlink decoder file (.npz without pickle): {exc}") from exc
    if _META_KEY not in files:
        raise ValidationError(f"{path} is not a cortexlink decoder file: no {_META_KEY} member")
    meta = json.loads(str(files.pop(_META_KEY)))
    if meta.get("format") != _FORMAT:
        raise ValidationError(f"{path} has format {meta.get('format')!r}; expected {_FORMAT!r}")
    version = meta.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION or version < 1:
        raise ValidationError(f"{path} has schema_version {version!r}; this cortexlink reads 1..{SCHEMA_VERSION}")
    cls_name = meta["class"]
    # importing the package registers every decoder class
    import cortexlink.decoders  # noqa: F401
    if cls_name not in _REGISTRY:
        raise ValidationError(f"{path} holds a {cls_name!r}; known decoders: {sorted(_REGISTRY)}")
    cls = _REGISTRY[cls_name]
    est = cls(**meta["params"])
    for k, v in meta["scalars"].items():
        setattr(est, k, tuple(v) if isinstance(v, list) else v)
    extra_arrays = {}
    for k, v in files.items():
        if k.startswith("extra/"):
            extra_arrays[k[len("extra/"):]] = v
        else:
            setattr(est, k, v)
    est.feature_names_ = None if meta["feature_names"] is None else tuple(meta["feature_names"])
    est.channel_map_ = None if meta["channel_map"] is None else ChannelMap.from_dict(meta["channel_map"])
    est._restore_extra(meta["extra"], extra_arrays)
    try:
        _check_parameters(est, extra_arrays)
    except (ValidationError, ConfigError) as exc:
        raise ValidationError(f"{path} holds a {cls_name} that cannot be used: {exc}; the file was damaged or "
                              "edited") from None
    est.reset_state()
    est.check_compatible(feature_names=expect_feature_names, channel_map=expect_channel_map,
                         n_features=expect_n_features)
    return est


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValidationError(f"{name} must be an integer >= 1; got {value!r}")
    return int(value)


def check_shapes(arrays: dict[str, Any], want: dict[str, tuple[int, ...]], where: str = "") -> None:
    """Raise ValidationError unless ``arrays`` holds exactly the names of ``want``, each of its shape."""
    missing, extra = sorted(set(want) - set(arrays)), sorted(set(arrays) - set(want))
    if missing or extra:
        raise ValidationError(f"expected the arrays {sorted(want)}; missing {missing}, unexpected {extra}")
    for name, shape in want.items():
        got = np.shape(arrays[name])
        if got != shape:
            raise ValidationError(f"{name} has shape {got}; expected {shape} {where}".rstrip())


def _check_parameters(est: Any, extra_arrays: dict[str, np.ndarray]) -> None:
    """What :func:`load` checks before a decoder is used (see its Raises)."""
    n = _count("n_features_in_", est.n_features_in_)
    if est.feature_names_ is not None and len(est.feature_names_) != n:
        raise ValidationError(f"it names {len(est.feature_names_)} features but n_features_in_ is {n}")
    values = {a: getattr(est, a, None) for a in est._persist if a not in est._nonfinite_ok}
    values.update(extra_arrays)
    for name, v in values.items():
        if isinstance(v, np.ndarray) and v.dtype.kind in "fc" and not np.all(np.isfinite(v)):
            raise ValidationError(f"{name} holds {int(np.sum(~np.isfinite(v)))} NaN/Inf value(s)")
        if isinstance(v, (float, np.floating)) and not math.isfinite(v):
            raise ValidationError(f"{name} is {v!r}; expected a finite number")
    if hasattr(est, "_check_params"):
        est._check_params()
    est._check_loaded()


def _describe_name_mismatch(expected: Sequence[str], got: Sequence[str]) -> str:
    expected, got = tuple(expected), tuple(got)
    if len(expected) != len(got):
        missing = [n for n in expected if n not in set(got)][:5]
        extra = [n for n in got if n not in set(expected)][:5]
        return (f"feature layout differs: decoder expects {len(expected)} features, data has {len(got)} "
                f"(missing e.g. {missing}, unexpected e.g. {extra})")
    i = next(i for i, (a, b) in enumerate(zip(expected, got)) if a != b)
    if set(expected) == set(got):
        return (f"feature layout differs: same {len(got)} names in another order "
                f"(first difference at column {i}: expected {expected[i]!r}, got {got[i]!r})")
    return (f"feature layout differs: first difference at column {i}: expected {expected[i]!r}, "
            f"got {got[i]!r}")


def _describe_map_mismatch(expected: ChannelMap, got: ChannelMap) -> str:
    if expected.channel_ids != got.channel_ids:
        return (f"channel map differs: decoder was fitted on {expected.n_channels} channels "
                f"({expected.channel_ids[:3]}...), data has {got.n_channels} ({got.channel_ids[:3]}...)")
    parts = []
    if not np.array_equal(expected.bad, got.bad):
        newly = [expected.channel_ids[i] for i in np.flatnonzero(got.bad & ~expected.bad)][:5]
        healed = [expected.channel_ids[i] for i in np.flatnonzero(~got.bad & expected.bad)][:5]
        parts.append(f"bad-channel mask differs (newly bad {newly}, no longer bad {healed})")
    if not np.array_equal(expected.positions_um, got.positions_um):
        parts.append("electrode positions differ")
    if not (np.array_equal(expected.gain_uv, got.gain_uv) and np.array_equal(expected.offset_uv, got.offset_uv)):
        parts.append("gain/offset differ")
    return "channel map differs: " + "; ".join(parts)
