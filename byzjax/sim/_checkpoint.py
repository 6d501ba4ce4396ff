"""Checkpoints of a group in progress, verified before they are resumed.

A group's folder ``outdir/checkpoints/<group_id>/`` holds orbax step folders
``<step>/`` (the batched simulator state, keys as raw key data, and the metrics
of the chunks done so far) and, beside each finished step, a manifest
``manifest-<step>.json``: the sha256 of every file of that step. A save is
synchronous: orbax writes the step, then the manifest is written atomically
(temporary file, ``fsync``, ``os.replace``), then older steps are deleted, so at
any moment the newest *verified* step is on disk.

Nothing is resumed from a file that was not verified: before a restore the
step's files are hashed and compared with its manifest. A step that fails
(bytes changed, a file missing or added, no manifest: a save that was killed
or a checkpoint of an older byzjax) is named in a one-line warning and
deleted; the runs resume from an older verified step if there is one, else
from round 0.

A save that fails (disk full, permissions) raises one ``OSError`` line naming
the folder; the previous verified step stays, so the same command resumes
from it once the disk has room.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import warnings

import jax
import numpy as np

__all__ = ["Checkpoints", "CheckpointWarning", "verify_step", "MANIFEST"]

#: Name of the manifest of step ``s``: ``MANIFEST.format(step=s)``.
MANIFEST = "manifest-{step}.json"
_MANIFEST_RE = re.compile(r"^manifest-(\d+)\.json$")


class CheckpointWarning(UserWarning):
    """A checkpoint that cannot be trusted or used; its runs start again."""


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _file_hashes(folder: str) -> dict[str, str]:
    """sha256 of every file under ``folder``, by path relative to it."""
    out = {}
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            h = hashlib.sha256()
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            out[os.path.relpath(path, folder).replace(os.sep, "/")] = h.hexdigest()
    return out


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def verify_step(directory: str, step: int) -> str | None:
    """Why step ``step`` of the checkpoint folder ``directory`` cannot be
    trusted, or ``None`` when every file matches its manifest.

    Example:
      >>> import os, tempfile
      >>> d = tempfile.mkdtemp()
      >>> os.makedirs(os.path.join(d, "3"))
      >>> verify_step(d, 3)
      'no manifest (a save that did not finish, or an older byzjax)'
    """
    path = os.path.join(directory, MANIFEST.format(step=step))
    try:
        with open(path) as fh:
            manifest = json.load(fh)
        files = manifest["files"]
        if manifest.get("step") != step or not isinstance(files, dict):
            raise ValueError
    except FileNotFoundError:
        return "no manifest (a save that did not finish, or an older byzjax)"
    except (OSError, ValueError, KeyError, TypeError):
        return "unreadable manifest"
    try:
        got = _file_hashes(os.path.join(directory, str(step)))
    except OSError as e:
        return f"cannot read its files ({e.strerror})"
    missing = sorted(set(files) - set(got))
    if missing:
        return f"file {missing[0]} is missing"
    extra = sorted(set(got) - set(files))
    if extra:
        return f"file {extra[0]} is not in its manifest"
    changed = [name for name in sorted(files) if files[name] != got[name]]
    if changed:
        return f"file {changed[0]} does not match its sha256"
    return None


def _no_space(exc: BaseException | None) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        if "no space left" in str(exc).lower():
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _first_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Checkpoints:
    """Verified orbax checkpoints of one group call.

    Args:
      directory: the group's checkpoint folder (created if needed).
      num_evals: evaluation chunks of the runs (a step ``s`` with
        ``0 < s < num_evals`` can be resumed).

    Example:
      >>> import os, tempfile, numpy as np
      >>> d = os.path.join(tempfile.mkdtemp(), "g")
      >>> ckpt = Checkpoints(d, num_evals=4)
      >>> state = {"w": np.arange(3.0, dtype=np.float32)}
      >>> ckpt.save(2, state, [{"loss": np.float32(1.0)}, {"loss": np.float32(.5)}])
      >>> sorted(os.listdir(d))
      ['2', 'manifest-2.json']
      >>> got, history = Checkpoints(d, num_evals=4).restore(
      ...     state, lambda s: (s, {"loss": np.float32(0)}))
      >>> got["w"].tolist(), [float(h["loss"]) for h in history]
      ([0.0, 1.0, 2.0], [1.0, 0.5])
      >>> ckpt.delete(); os.path.exists(d)
      False
    """

    def __init__(self, directory: str, num_evals: int):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = os.path.abspath(directory)
        self.num_evals = num_evals
        self._open()

    def _open(self) -> None:
        ocp = self._ocp
        try:
            self.manager = ocp.CheckpointManager(
                self.directory,
                options=ocp.CheckpointManagerOptions(
                    max_to_keep=None, create=True, cleanup_tmp_directories=True,
                    # Synchronous: the manifest is written once orbax has
                    # finished, and a failure is raised here, in one piece,
                    # not logged by orbax's background threads.
                    enable_async_checkpointing=False))
        except Exception as e:
            raise self._error("open", e) from e

    def _error(self, what: str, exc: BaseException) -> OSError:
        if _no_space(exc):
            return OSError(errno.ENOSPC,
                           f"cannot {what} checkpoint in {self.directory}: no space "
                           "left on device; free some space and run the same "
                           "command again (it resumes from the last checkpoint)")
        code = exc.errno if isinstance(exc, OSError) else None
        return OSError(code, f"cannot {what} checkpoint in {self.directory}: "
                             f"{_first_line(exc)}")

    def steps(self) -> list[int]:
        """The finished orbax steps in the folder, oldest first."""
        try:
            names = os.listdir(self.directory)
        except OSError:
            return []
        return sorted(int(n) for n in names if n.isdigit()
                      and os.path.isdir(os.path.join(self.directory, n)))

    def save(self, step: int, state, history) -> None:
        """Saves ``state`` and the chunks' metrics ``history`` as step ``step``,
        with its manifest; then deletes the older steps.

        Raises:
          OSError: one line naming the folder (and "no space left on device"
            when the disk is full); the older verified step is kept.
        """
        tree = {"state": jax.tree_util.tree_map(
                    lambda x: jax.random.key_data(x) if _is_key(x) else x, state),
                "history": {k: np.stack([np.asarray(h[k]) for h in history])
                            for k in history[0]}}
        try:
            self.manager.save(step, args=self._ocp.args.StandardSave(tree),
                              force=True)
            self.manager.wait_until_finished()
            manifest = {"step": step, "files": _file_hashes(
                os.path.join(self.directory, str(step)))}
            _write_atomic(os.path.join(self.directory, MANIFEST.format(step=step)),
                          json.dumps(manifest, indent=1, sort_keys=True))
        except Exception as e:
            raise self._error("save", e) from e
        for old in self.steps():
            if old < step:
                self._remove(old)

    def _remove(self, step: int) -> None:
        with contextlib.suppress(Exception):  # orbax forgets the step too
            self.manager.delete(step)
        shutil.rmtree(os.path.join(self.directory, str(step)), ignore_errors=True)
        with contextlib.suppress(OSError):
            os.remove(os.path.join(self.directory, MANIFEST.format(step=step)))

    def _drop(self, why: str) -> None:
        warnings.warn(f"checkpoint {self.directory} {why}; starting these runs "
                      "from round 0", CheckpointWarning, stacklevel=4)
        self.manager.close()
        shutil.rmtree(self.directory, ignore_errors=True)
        self._open()

    def restore(self, state, chunk_fn):
        """``(state, history)`` from the newest verified step, or ``(state, [])``.

        Args:
          state: the freshly initialised batched state (gives the structure,
            shapes and key implementations).
          chunk_fn: ``state -> (state, metrics)``, one evaluation chunk (only
            its output shapes are used, through ``jax.eval_shape``).
        """
        bad = []
        step = None
        for s in reversed(self.steps()):
            why = verify_step(self.directory, s)
            if why is None:
                step = s
                break
            bad.append((s, why))
        if step is None and not bad:
            return state, []
        if step is None:
            s, why = bad[0]
            self._drop(f"step {s} failed its check: {why}")
            return state, []
        for s, why in bad:  # newer steps that cannot be trusted
            warnings.warn(f"checkpoint {self.directory}: step {s} failed its "
                          f"check ({why}); resuming from step {step}",
                          CheckpointWarning, stacklevel=3)
            self._remove(s)
        if not 0 < step < self.num_evals:
            return state, []
        metrics = jax.eval_shape(chunk_fn, state)[1]
        target = {"state": jax.tree_util.tree_map(
                      lambda x: jax.random.key_data(x) if _is_key(x) else x, state),
                  "history": {k: np.zeros((step,) + tuple(v.shape), v.dtype)
                              for k, v in metrics.items()}}
        try:
            got = self.manager.restore(step,
                                       args=self._ocp.args.StandardRestore(target))
            restored = jax.tree_util.tree_map(
                lambda old, new: (jax.random.wrap_key_data(
                    new, impl=jax.random.key_impl(old)) if _is_key(old) else new),
                state, got["state"])
        except Exception as e:  # written by another version of the program
            self._drop(f"does not fit this program ({type(e).__name__}: "
                       f"{' '.join(str(e).split())[:200]})")
            return state, []
        history = [{k: np.asarray(v[i]) for k, v in got["history"].items()}
                   for i in range(step)]
        return restored, history

    def delete(self) -> None:
        """Removes the folder (the runs are done)."""
        with contextlib.suppress(Exception):
            self.manager.wait_until_finished()
            self.manager.close()
        shutil.rmtree(self.directory, ignore_errors=True)
