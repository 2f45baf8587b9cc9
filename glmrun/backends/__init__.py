"""Backends: the one seam between glmrun and a model (`base.Backend`: complete / submit /
poll -> Reply, each request with its `RequestIdentity`: the run and call that sent it).
zhipu is the only module importing the SDK; bounded caps a reply's decoded size; cancel cuts
a call off from another thread; recording and store record, replay and cache replies;
scripted answers from a script (tests); batch_api is the batch half of the seam.

May import: errors, types, models, safety.
"""
