"""The tracker under ``torch.distributed``: who measures what, how sharded updates are gathered, results to all.

Every rank builds the same units in the same order (the model is the same on every rank). Each
unit gets one *owner* rank (greedy, balanced by estimated cost). On a due step:

1. units are read in that fixed order. FSDP2 LoRA factors (row-sharded ``DTensor`` parameters)
   of all due units are gathered by one ``all_gather`` of a flat buffer (with a status slot, so a
   rank that cannot read its shards still takes part). Other sharded units (full fine-tuning
   under FSDP2, FSDP1 flat parameters) are gathered by a collective that every rank calls, one
   matrix at a time (the update ``W - W0``, differenced shard by shard); only the owner keeps
   it. A unit whose parameters are whole on every rank (DDP, replicated) is read by its owner
   alone, with no communication;
2. each owner measures its units locally (all its LoRA units in one call); failures and
   non-finite updates become per-unit outcomes instead of exceptions;
3. one ``all_gather`` of a float64 buffer laid out from the due units (status, meta numbers,
   entropies) gives every rank every outcome (error texts travel in one ``all_gather_object``
   more, only on steps where a unit failed), so all ranks record, skip, count failures and drop
   units identically, and the next due step calls the same collectives.

Steps with nothing due call no collective.

Modules: :mod:`.wrappers` (the wrappers the tracker refuses or reads around: DeepSpeed, FSDP1),
:mod:`.gather` (reading the due units in the fixed order, sharded ones made whole), :mod:`.exchange`
(the outcomes to every rank, and the checks and broadcasts at construction). Owners and costs:
:mod:`artent_fast.tracking.schedule`.
"""
