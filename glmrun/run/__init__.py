"""Run: plans in, transcripts and a summary out. The worker pool, the adaptive gate, retries
and rate caps (limits), one conversation's turns and tool rounds (runner), answering tool
calls from `respond:` (tools), what a cut-off conversation keeps for --resume (resume), a
fresh request_id per request (request_ids).

May import: errors, types, models, safety, load, checks, plan, backends, output.
"""
