"""`Engine`: the library entry point and the one assembly point. Settings in, parts built once, search and index out.

Entry point: `mmsearch.Engine(uri=..., smoke=False, device=...)`, used as a context manager:

    with mmsearch.Engine("./mmsearch.db", smoke=True) as engine:
        engine.index("catalogue/products.jsonl")
        result = engine.search(image="query.jpg", text="phone case with this pattern", k=5)

Explicit arguments win over the environment (`MMSEARCH_*`), which fills in the rest. Parts load lazily, on the
first call that needs them, and arguments are checked before anything loads. The CLI, the API and the notebook all
go through this class; everything below it receives built parts.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from mmsearch.config import Settings
from mmsearch.engine.demo import DEMO_SOURCE, default_demo_dir, write_demo
from mmsearch.engine.parts import (
    build_encoder,
    build_fetcher,
    build_pipeline,
    build_reranker,
    build_store,
    build_title_encoder,
    hit_image_loader,
    resolve_ref,
)
from mmsearch.engine.preflight import check_model_parts
from mmsearch.engine.queries import check_search_args, load_query_image
from mmsearch.errors import CollectionNotFoundError, ConfigError
from mmsearch.limits import DEFAULT_K, DEFAULT_RRF_K
from mmsearch.media import ImageSource


class Engine:
    """Multimodal product search over one Milvus collection: `index(source)`, `search(image=, text=)`, `close()`.

    Args:
        uri: Milvus Lite file (`./mmsearch.db`) or server (`http://host:19530`); default `MMSEARCH_MILVUS_URI`.
        collection: collection name; default `MMSEARCH_COLLECTION` or `amazon_products`.
        smoke: tiny random-weight models (plumbing checks only, never search quality).
        device, dtype: where and in what precision models run (`auto` picks).
        settings: a full `Settings` to start from instead of the environment; explicit arguments still win.
        encoder, title_encoder, reranker: already built parts to use instead of building them (tests, benchmarks, a server
            that keeps its models across store reconnects).
        **overrides: any other `Settings` field, e.g. `encoder_weights=...`, `reranker_model=...`, `max_k=...`.
    """

    def __init__(
        self,
        uri: str | None = None,
        *,
        collection: str | None = None,
        smoke: bool | None = None,
        device: str | None = None,
        dtype: str | None = None,
        settings: Settings | None = None,
        encoder: Any = None,
        title_encoder: Any = None,
        reranker: Any = None,
        **overrides: Any,
    ):
        unknown = sorted(set(overrides) - set(Settings.model_fields))
        if unknown:
            raise ConfigError(
                f"unknown Engine option(s) {', '.join(unknown)}; expected Settings fields such as "
                "encoder_weights, reranker_model, max_k, cache_dir"
            )
        explicit = {
            "milvus_uri": uri,
            "collection": collection,
            "smoke": smoke,
            "device": device,
            "dtype": dtype,
            **overrides,
        }
        explicit = {name: value for name, value in explicit.items() if value is not None}
        if settings is None:
            self.settings = Settings(**explicit)  # init arguments beat MMSEARCH_* variables
        else:
            self.settings = (
                Settings.model_validate(settings.model_dump() | explicit) if explicit else settings
            )
        self._encoder = encoder
        self._title_encoder = title_encoder
        self._reranker = reranker
        self._store = None
        self._pipeline = None
        self._closed = False

    # -- parts (built on first use) ------------------------------------------------------------------------------

    @property
    def encoder(self):
        """The image/text encoder, loaded on first use."""
        if self._encoder is None:
            self._encoder = build_encoder(self.settings)
        return self._encoder

    @property
    def title_encoder(self):
        """The model behind the title vectors (`settings.title_encoder`; "same": the encoder's text tower)."""
        if self._title_encoder is None:
            self._title_encoder = build_title_encoder(self.settings, self.encoder)
        return self._title_encoder

    @property
    def reranker(self):
        """The Phi-3 Vision reranker (its weights load on its first rerank, or `reranker.load()`)."""
        if self._reranker is None:
            self._reranker = build_reranker(
                self.settings, image_loader=hit_image_loader(self.settings, root=self.image_root)
            )
        return self._reranker

    def image_root(self) -> Path | None:
        """Where relative local image refs resolve: `catalogue_root` (`--root`), else the root kept at index time."""
        if self.settings.catalogue_root is not None:
            return Path(self.settings.catalogue_root)
        stored = self.store().catalogue_root()
        return Path(stored) if stored else None

    def resolve_ref(self, ref: str) -> str:
        """A stored `image_url` as a fetchable URL or path (relative refs confined to `image_root()`)."""
        return resolve_ref(ref, self.image_root())

    def store(self, *, create: bool = False):
        """The open `ProductStore`; `create=True` (indexing) may make a new Milvus Lite database."""
        self._check_open()
        if self._store is None:
            self._store = build_store(self.settings, create=create)
        return self._store

    def pipeline(self, *, rerank: bool = False, load: bool = False):
        """The `SearchPipeline` over this engine's parts; `rerank=True` attaches the reranker (`load` loads it now).

        A store that cannot be checked against the encoder (nothing indexed yet, another encoder) is closed again,
        so a later call can retry; the encoder and reranker stay loaded.
        """
        if self._pipeline is None:
            encoder = self.encoder
            store = self.store()
            try:
                self._pipeline = build_pipeline(
                    self.settings, encoder, store, title_encoder=self.title_encoder
                )
            except BaseException:
                self._drop_store()  # a Lite store left open would keep its file locked
                raise
        if rerank and self._pipeline.reranker is None:
            self._pipeline.reranker = self.reranker
        if rerank and load and hasattr(self._pipeline.reranker, "load"):
            self._pipeline.reranker.load()
        return self._pipeline

    # -- verbs ---------------------------------------------------------------------------------------------------

    def index(
        self,
        source: str = "bootcamp",
        *,
        limit: int | None = None,
        failure_log: str | Path | None = None,
        batch_size: int | None = None,
        workers: int = 8,
        max_images_per_product: int | None = None,
        reindex: bool = False,
        allow_paths: Sequence[str | Path] = (),
        progress: bool = False,
        engine: str = "local",
        ray_options: Any = None,
    ):
        """Index `source` (see `mmsearch.indexer.sources.open_source`) and return the `IndexReport`.

        The source is opened and checked before any model loads. `reindex=True` re-embeds ids already stored;
        `allow_paths` are folders, beyond the catalogue's own, that its local image paths may resolve to.
        `engine="ray"` runs the job on Ray Data (`ray_options`: a `pipelines.ray_engine.RayOptions`).
        """
        from mmsearch.indexer.sources import open_source
        from mmsearch.pipelines.index import ENGINES, run_index

        self._check_open()
        if source == DEMO_SOURCE:  # the offline catalogue, written (once) under the cache dir
            source = str(write_demo(default_demo_dir(self.settings.cache_dir))[0])
        if engine not in ENGINES:
            raise ConfigError(f"engine must be one of {ENGINES}, got {engine!r}")
        if engine == "ray":
            return self._index_on_ray(
                source,
                limit=limit,
                failure_log=failure_log,
                batch_size=batch_size,
                max_images_per_product=max_images_per_product,
                allow_paths=allow_paths,
                progress=progress,
                options=ray_options,
            )
        src = open_source(
            source,
            cache_dir=self.settings.cache_dir,
            limit=limit,
            max_images_per_product=max_images_per_product,
            allow_paths=allow_paths,
        )
        src.prepare()
        check_model_parts(self.settings)
        encoder = self.encoder
        report = run_index(
            self.settings,
            encoder=encoder,
            title_encoder=self.title_encoder,
            store=self.store(create=True),
            source=src,
            failure_log=failure_log,
            batch_size=batch_size,
            workers=workers,
            reindex=reindex,
            progress=progress,
        )
        return report

    def _index_on_ray(self, source: str, **kwargs: Any):
        from mmsearch.pipelines.ray_engine import run_index_ray  # imports ray only when it runs

        # Ray actors build their own models: the builders travel as picklable partials.
        return run_index_ray(
            self.settings,
            source=source,
            store=self.store(create=True),
            encoder_factory=functools.partial(build_encoder, self.settings),
            title_factory=functools.partial(build_title_encoder, self.settings),
            **kwargs,
        )

    def search(
        self,
        image: ImageSource | None = None,
        text: str = "",
        *,
        k: int = DEFAULT_K,
        filters: Any = None,
        mode: str | None = None,
        rerank: bool = False,
        weights: tuple[float, float] = (0.7, 0.3),
        ranker: str = "weighted",
        rrf_k: int = DEFAULT_RRF_K,
        one_per_product: bool = True,
    ):
        """Search by a photo (path, URL, bytes or PIL image), an instruction, or both; returns a `SearchResult`.

        `filters` is a `ProductFilter` or a mapping of its fields (`{"category": ..., "max_price": ...}`); `mode`
        None is the encoder's default; `one_per_product=False` lists every matching image, not each product once.
        Arguments and the query image are checked before any model loads.
        """
        from mmsearch.pipelines import SearchRequest

        self._check_open()
        request = SearchRequest(
            image=None,
            instruction=text,
            k=k,
            filters=filters,
            mode=mode,
            weights=weights,
            ranker=ranker,
            rrf_k=rrf_k,
            rerank=rerank,
            one_per_product=one_per_product,
        )
        request = check_search_args(request, image=image, max_k=self.settings.max_k)
        if image is not None:
            with build_fetcher(self.settings, retries=1) as fetcher:
                decoded = load_query_image(image, fetcher)
            request = replace(request, image=decoded)
        if self._pipeline is None:
            # Everything that fails fast goes before the models load: files on disk, the database, the collection.
            check_model_parts(self.settings, rerank=rerank)
            store = self.store()
            if not store.exists():
                raise CollectionNotFoundError(
                    f"collection {self.settings.collection!r} does not exist at {self.settings.milvus_uri}; run "
                    "`mmsearch index` first (or `mmsearch demo` for an offline demo), or pass --collection"
                )
        return self.pipeline(rerank=rerank).run(request)

    def demo_query_image(self) -> Path:
        """The demo catalogue's query photo (written with the catalogue by `index("demo")`)."""
        return write_demo(default_demo_dir(self.settings.cache_dir))[1]

    def info(self) -> dict[str, Any]:
        """Where the store is and what it holds."""
        return self.store().info()

    # -- lifetime ------------------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigError("this Engine is closed; create a new one")

    def _drop_store(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            store.close()

    def close(self) -> None:
        """Close the store (releasing a Milvus Lite database for other processes). Idempotent."""
        if self._closed:
            return
        self._closed = True
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            pipeline.close()
        self._drop_store()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        s = self.settings
        return f"Engine(uri={s.milvus_uri!r}, collection={s.collection!r}, smoke={s.smoke})"


__all__ = ["Engine"]
