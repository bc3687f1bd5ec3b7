"""The batch indexer: `sources` (product records) -> images (`mmsearch.media`: fetch, decode, validate) -> `job`
(encode, upsert).

Entry points: `mmsearch.indexer.sources.open_source`, `mmsearch.indexer.job.IndexJob`;
`mmsearch.pipelines.index.run_index` runs them over parts `mmsearch.Engine` built. Nothing is imported here, so importing one
submodule stays light.
"""
