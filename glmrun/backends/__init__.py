"""Backends: the one seam between glmrun and a model (`base.Backend`: complete / submit /
poll -> Reply, each request with its `RequestIdentity`: the run and call that sent it).
sdk does the work for both SDKs, whose adapters zhipu (zhipuai) and zai (zai-sdk) are the only
modules importing them; regions names Zhipu's two platforms (cn, intl); codes maps Zhipu's
business codes to glmrun's errors; bounded caps a reply's decoded size; cancel cuts a call off
from another thread; recording and store record, replay and cache replies; scripted answers
from a script (tests); batch_api is the batch half of the seam.

May import: errors, types, models, safety.
"""
