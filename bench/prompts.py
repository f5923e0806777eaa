"""Realistic ~1 KB business chat prompts for the proxy benchmark, a new one for every request.

``prompt(n)`` is a task (one of 40) followed by nine context sentences drawn without repetition
from a pool of 24, the choice and order taken from ``n`` in a mixed radix: every ``n`` below
40 * 24 * 23 * ... * 16 (over 10**13) gives a different text, so no cache in a gateway
(PII detections, policy decisions) ever sees the same user message twice in a run.
The texts hold no personal data: no names, places, dates, numbers, addresses or identifiers.
They are plain ASCII without quotes or backslashes, so they need no JSON escaping.

Two workloads (``messages(workload, n)``), both about 1 KB per request:

``chat``    what an enterprise chat request looks like: a fixed ~660-character operations-assistant
            system prompt (``CHAT_SYSTEM``, the same in every request, as earlier turns would be)
            plus a new ~325-character user turn, ``chat_prompt(n)``: a task, four notes drawn
            without repetition from 24 and one of six closings, again in a mixed radix
            (40 * 24 * 23 * 22 * 21 * 6, over 6 * 10**7, different texts).
``unique``  the short ``SYSTEM`` line plus the ~1 KB ``prompt(n)``: nearly every character is new
            in every request, the worst case for a PII engine that caches per message.
"""

from __future__ import annotations

SYSTEM = "You are a careful assistant for an operations team. Answer in plain, short paragraphs."

TASKS = (
    "Draft a short summary of the supply chain review for the operations leadership team.",
    "Write an internal note that explains the new expense approval workflow to managers.",
    "Summarise the main risks raised in the vendor onboarding assessment below.",
    "Prepare talking points for the weekly sync about the warehouse automation pilot.",
    "Turn the following meeting notes into a list of decisions and open questions.",
    "Explain the proposed change to the customer support escalation process in simple terms.",
    "Outline a rollout plan for the updated inventory forecasting dashboard.",
    "Write a status update on the data platform migration for the steering committee.",
    "Suggest improvements to the onboarding checklist for new finance analysts.",
    "Summarise the feedback collected from the internal tooling survey.",
    "Draft a message to department heads about the revised travel policy.",
    "Explain the trade-offs between the two logistics providers under consideration.",
    "Write a brief for the design team about the refreshed reporting templates.",
    "Summarise the lessons learned from the last product launch retrospective.",
    "Prepare an agenda for the quarterly planning workshop of the platform group.",
    "Describe the key metrics the service desk should track after the process change.",
    "Draft a proposal to consolidate the three overlapping project tracking tools.",
    "Write guidance for teams on how to request access to the analytics environment.",
    "Summarise the procurement policy changes that affect small purchases.",
    "Explain why the release calendar is moving to a fixed monthly cadence.",
    "Write a short risk register entry for the delayed hardware refresh.",
    "Draft an announcement about the new internal knowledge base.",
    "Summarise the pros and cons of moving the nightly batch jobs to the cloud.",
    "Prepare a one page overview of the incident review process for new engineers.",
    "Write a memo that explains the budget reallocation between the two programmes.",
    "Suggest a communication plan for the upcoming office consolidation.",
    "Explain the new quality checks introduced on the packaging line.",
    "Draft frequently asked questions about the updated performance review cycle.",
    "Summarise the results of the energy efficiency audit for the facilities team.",
    "Write a handover note for the team taking over the billing system support.",
    "Outline the steps to retire the legacy document management system.",
    "Draft a policy reminder about handling confidential documents in shared drives.",
    "Summarise the customer churn analysis for the commercial leadership team.",
    "Prepare an executive summary of the cyber security awareness programme.",
    "Explain the difference between the old and the new capacity planning model.",
    "Write a short note that thanks the volunteers who organised the training week.",
    "Draft criteria for choosing which internal services move to the new platform first.",
    "Summarise the operational impact of the new returns handling process.",
    "Outline a training plan for supervisors on the revised safety procedures.",
    "Write a recommendation on whether to extend the remote support contract.",
)

CONTEXT = (
    "The team has been running the current process for several years and most steps are still manual.",
    "Several managers reported that approvals take too long and that requests are often lost in email.",
    "The pilot phase finished on schedule, although the reporting part needed more work than planned.",
    "Stakeholders asked for a clear owner for each step and a single place to see the status of work.",
    "The finance group wants the change to stay within the budget that was agreed at the start.",
    "Feedback from the frontline staff was mostly positive, with concerns about training time.",
    "The existing tools overlap in features and each one requires its own licence and support contract.",
    "A few dependencies on older systems make a quick switch risky without a fallback plan.",
    "The leadership team expects a written recommendation that can be discussed at the next review.",
    "The support team noticed that repeated questions account for a large share of incoming tickets.",
    "Documentation is scattered across wikis, shared folders and personal notes of senior staff.",
    "Some teams already adopted the new approach informally and reported fewer handover problems.",
    "The main constraint is the limited availability of specialists during the busy season.",
    "An external review recommended simplifying the approval chain and automating routine checks.",
    "Any change must keep the audit trail complete and easy to follow for the compliance function.",
    "The operations group would like a phased rollout with a checkpoint after the first phase.",
    "Customers have not been affected so far, but response times have slowly become longer.",
    "The proposal should explain the expected benefits without overstating the savings.",
    "Managers asked for a simple way to measure whether the change actually improves things.",
    "Training material exists but is out of date and does not cover the newer features.",
    "The vendor offered a discount for a longer commitment, which needs careful evaluation.",
    "Teams in different functions use different terms for the same steps, which causes confusion.",
    "The current dashboard shows too many indicators and hides the few that really matter.",
    "Please keep the tone neutral and practical, and avoid jargon where a plain word will do.",
)

CLOSING = "Keep the answer focused and list any assumptions you make."
PICKS = 9


def _pick(items: tuple[str, ...], count: int, rest: int) -> tuple[list[str], int]:
    """``count`` of ``items`` without repetition, chosen by the mixed-radix digits of ``rest``
    (each digit in base: what is left to choose from); and what is left of ``rest``."""
    pool = list(items)
    chosen = []
    for _ in range(count):
        rest, index = divmod(rest, len(pool))
        chosen.append(pool.pop(index))
    return chosen, rest


def prompt(n: int) -> str:
    """The ``n``-th user message (about 1 KB); different for every ``n`` up to ~10**13."""
    task, rest = TASKS[n % len(TASKS)], n // len(TASKS)
    chosen, _ = _pick(CONTEXT, PICKS, rest)
    return f"{task} Context: {' '.join(chosen)} {CLOSING}"


# --- the chat workload -------------------------------------------------------------------

CHAT_SYSTEM = (
    "You are the operations assistant of a mid-sized company. You help managers and staff plan work, "
    "summarise documents, draft internal notes and prepare decisions. Answer in plain, short paragraphs "
    "and use a list only when the reader has to act on several separate points. Keep to the facts given "
    "in the conversation; when something is missing or unclear, say what you would need instead of "
    "guessing. Do not invent figures, deadlines or commitments. Respect the internal policies on "
    "confidential material: never repeat credentials or customer records, and point to the proper "
    "channel when a request needs approval. Write in a neutral, practical tone and avoid jargon."
)

NOTES = (
    "Most steps of the process are still done by hand.",
    "Requests are often lost between shared inboxes.",
    "Managers want one clear owner for every step.",
    "The budget agreed at the start must not grow.",
    "Frontline staff worry about the training effort.",
    "Several tools overlap and each needs a licence.",
    "Older systems make a quick switch rather risky.",
    "Leadership expects a written recommendation.",
    "Repeated questions fill a large share of tickets.",
    "Documentation is scattered across many folders.",
    "Some teams already use the new approach quietly.",
    "Specialists are scarce in the busiest periods.",
    "A review advised a shorter approval chain.",
    "The audit trail must stay complete and readable.",
    "Operations would like a phased rollout.",
    "Customers have not noticed any change so far.",
    "The expected benefits should not be overstated.",
    "Managers need a simple measure of improvement.",
    "Training material is out of date in places.",
    "The vendor offers a discount for a long commitment.",
    "Teams use different terms for the same step.",
    "The dashboard shows too many indicators at once.",
    "Compliance wants every exception explained.",
    "The support desk needs guidance for edge cases.",
)

CLOSINGS = (
    "Keep the answer focused and list your assumptions.",
    "Please keep it brief and practical for busy readers.",
    "Flag any open questions that need a decision first.",
    "Use plain words and avoid internal jargon.",
    "End with the next steps and an owner for each.",
    "Point out risks the team may have overlooked.",
)
NOTE_PICKS = 4


def _chat_variants() -> int:
    count = len(TASKS) * len(CLOSINGS)
    for i in range(NOTE_PICKS):
        count *= len(NOTES) - i
    return count


CHAT_VARIANTS = _chat_variants()  # chat_prompt(n) differs for every n below this


def chat_prompt(n: int) -> str:
    """The ``n``-th chat user turn (about 325 characters); different for every ``n`` below
    ``CHAT_VARIANTS``, and ``n`` wraps around above it."""
    rest, task = divmod(n % CHAT_VARIANTS, len(TASKS))
    chosen, rest = _pick(NOTES, NOTE_PICKS, rest)
    return f"{TASKS[task]} Notes: {' '.join(chosen)} {CLOSINGS[rest % len(CLOSINGS)]}"


WORKLOADS = ("chat", "unique")


def messages(workload: str, n: int) -> list[dict[str, str]]:
    """The chat messages of request ``n`` of ``workload``: a system message and a user message."""
    if workload == "chat":
        system, user = CHAT_SYSTEM, chat_prompt(n)
    elif workload == "unique":
        system, user = SYSTEM, prompt(n)
    else:
        raise ValueError(f"unknown workload {workload!r} (known: {', '.join(WORKLOADS)})")
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def sizes(workload: str, samples: int = 2000) -> dict[str, float]:
    """Characters of ``workload``'s requests: the system message, the user message (mean, min,
    max over the first ``samples`` requests) and the mean total."""
    pairs = [[len(m["content"]) for m in messages(workload, n)] for n in range(samples)]
    users = [u for _, u in pairs]
    return {
        "system": pairs[0][0],
        "user": sum(users) / samples,
        "user_min": min(users),
        "user_max": max(users),
        "total": sum(s + u for s, u in pairs) / samples,
    }
