"""Run: plans in, transcripts and a summary out. The worker pool, stopping, calls with retries
and async polling (runner); what a run is given and whom it tells (options); the adaptive
gate, retry policy and rate caps (limits); one conversation's turns, tool rounds, checks and
transcript (conversation); answering tool calls from `respond:` (tools); what a cut-off
conversation keeps for --resume (resume); a fresh request_id per request (request_ids).

May import: errors, types, models, safety, load, checks, plan, backends, output.
"""
