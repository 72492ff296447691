"""Hard or soft: what one failed delivery says about the recipient's address.

*Hard* means the address itself is unreachable for good (user unknown, host or domain unknown,
a domain that accepts no mail, a mailbox that has moved): the contact is suppressed. *Soft*
means something about this message or this moment (mailbox full, too big, delayed, a filter):
it is counted. *Flagged* failures are soft and not even counted: they are about us (our sender
address, our domain's authentication, our HELO name) or about policy (5.7.x: spam, blocklists,
relaying), and the owner should look at them; they never suppress a recipient.

:func:`judge` reads the evidence in this order; the first step that decides, decides:

1. **Our side**: words about our sender or HELO name (``Sender address rejected``, ``after
   MAIL FROM``, ``invalid HELO``...) or the codes 5.1.7/5.1.8: flagged (``sender``).
2. **Policy**: a 5.7.x code, or words about spam, blocklists, relaying, SPF/DKIM/DMARC:
   flagged (``blocked``).
3. **The enhanced status code**: 4.x.x is temporary, soft, unless the words are unambiguous about
   a nonexistent user; 5.2.x says the mailbox exists (5.2.2 full): soft (5.2.1, "disabled",
   which many servers answer for unknown users, is hard with "user unknown" words in answer
   to RCPT TO); 5.1.1, 5.1.2, 5.1.3,
   5.1.6, 5.1.10 name a bad address: hard, unless the words name a mailbox state (full, too
   big, disabled), which servers that answer 5.1.1 for everything get right in words only.
4. **The diagnostic text**: the first of :data:`RULES` that matches, soft ones first, since
   servers mix their words ("mailbox unavailable: over quota"); directory wording ("no such
   user", "user unknown", "mailbox unavailable", "unrouteable address", "recipient address
   rejected: user...", "doesn't have a … account", "invalid recipient") is hard. Temporary DNS
   failures ("Host not found, try again") are soft. A bare "User unknown" said after the
   message was sent (DATA), or by a Japanese mobile carrier other than to RCPT TO (they say it
   for mail their subscribers' filters refuse), is a filter's answer: soft.
5. **The SMTP stage**: a permanent refusal in answer to RCPT TO, with nothing else recognised,
   is about the address: hard.
6. Otherwise soft: a wrongly suppressed contact is worse than one more counted soft bounce.
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["FLAGGED", "HARD_REASONS", "RULES", "best_status", "first_reason", "judge",
           "smtp_stage", "status_in"]


def _rx(*alternatives: str) -> re.Pattern[str]:
    return re.compile("|".join(alternatives), re.IGNORECASE)


_SENDER = _rx(
    r"sender (address |domain )?(rejected|denied|refused|blocked|invalid|unknown|not allowed)",
    r"sender verify failed", r"from address (rejected|not allowed)", r"after MAIL FROM",
    r"in reply to MAIL FROM", r"envelope sender", r"domain of sender address",
    r"sender (address |domain )?does not exist", r"unknown sender", r"sender's domain",
    r"\bhelo\b.{0,40}(rejected|invalid|refused|denied|not allowed)",
    r"(invalid|bad|rejected|unknown) helo", r"helo command rejected", r"\behlo\b.{0,20}rejected",
    r"(client|your) host .{0,60}(rejected|blocked|denied)", r"sender address is not valid",
    r"invalid ip for sending", r"(sending|your|client) ip .{0,40}(blocked|not allowed|rejected)")

# Ordered: the first rule whose pattern occurs in the text about a recipient names the reason.
RULES: list[tuple[str, bool, re.Pattern[str]]] = [
    ("mailboxfull", False, _rx(
        r"mail ?box (is )?(full|over|exceed)", r"mail ?box.{0,30}(is )?full\b", r"quota",
        r"insufficient (disk |system )?(space|storage)", r"not enough (storage|space)",
        r"exceeded (its |the )?storage", r"user is over", r"full mail ?box",
        r"disk full", r"mailfolder is full", r"mail ?box size limit", r"too many messages",
        r"too much mail", r"容量(超過|オーバー|不足)|メールボックスがいっぱい|邮箱已满|空间不足")),
    ("mesgtoobig", False, _rx(
        r"message (size )?(is )?too (big|large)", r"exceeds? (the )?(maximum|max\w*|size)",
        r"size (limit )?exceed", r"message length exceeds", r"too large")),
    ("suspend", False, _rx(
        r"(account|mail ?box|user|address|recipient)\W+(\w+\W+){0,5}(is |has been )?"
        r"(disabled|suspended|inactive|deactivated|frozen|locked|on hold|blocked|bloque)",
        r"(disabled|suspended|inactive|deactivated|expired) (account|mail ?box|user|recipient)",
        r"mail ?box (is )?(unavailable|not available) for (receiving|delivery)",
        r"temporar(il)?y (locked|disabled|suspended|blocked)", r"not been collected")),
    ("blocked", False, _rx(
        r"\bspam", r"black ?list", r"block ?list", r"blocked (using|by|for|due|because)",
        r"(listed|blocked) (at|in|on|by) [\w.]*(spamhaus|spamcop|sorbs|barracuda|dnsbl|rbl)",
        r"reputation", r"relay(ing)? (access )?(denied|not (permitted|allowed))",
        r"(not permitted|unable) to relay", r"virus", r"malware", r"dmarc", r"spf (check )?fail",
        r"dkim", r"ptr record", r"reverse dns", r"rate limit", r"not accepting mail from",
        r"too many (connections|recipients)", r"unsolicited", r"content (was )?rejected",
        r"\bpolicy\b", r"not authori[sz]ed to send")),
    ("dnstemporary", False, _rx(
        r"(host|domain|name)\W+(\w+\W+){0,6}not found,? try again",
        r"name service error.{0,80}try again",
        r"temporary (dns|lookup|name ?server) (failure|error)",
        r"dns (lookup |query )?(timed? ?out|timeout|temporary|servfail)", r"servfail",
        r"temporary failure in name resolution")),
    ("hasmoved", True, _rx(r"has moved", r"address (has )?changed", r"no longer (with|at) ")),
    ("userunknown", True, _rx(
        r"user (is )?unknown(?! host)", r"unknown (user|recipient|mailbox|local[- ]part|address)",
        r"addressee unknown",
        r"no such (user|recipient|mailbox|address|account|person|local user)",
        r"recipient (is )?unknown", r"no mail ?box here", r"no user by that name",
        r"(user|recipient|mail ?box|address|account|e-?mail)\W+(\w+\W+){0,3}"
        r"(does ?n[o']t|did ?not) exist", r"(does ?n[o']t|doesn't) have an? ([\w.-]+ )?account",
        r"invalid (final delivery )?userid", r"n'existe pas", r"existiert nicht",
        r"invalid (recipient|mail ?box|user|address|e-?mail address)",
        r"(mail ?box|recipient|user|address) (was |is )?not found", r"address not found",
        r"not a valid (recipient|mail ?box|user|e-?mail)", r"no mail ?box", r"no (such )?account",
        r"user not (found|exist)", r"not our customer", r"no valid recipients",
        r"account (does not exist|not found|closed|has been (closed|removed|deleted))",
        r"unknown in (local|virtual|relay) recipient table", r"unrout(e)?able address",
        r"bad (destination|recipient) (mailbox|address)", r"mailbox unavailable",
        r"recipient (address )?rejected: (access denied|user)",
        r"recipient address rejected\.? \(in reply to rcpt to command\)",
        r"undeliverable address", r"is not a known user", r"recipient name is not recognized",
        r"not listed in (the )?(public name|domino|directory|address book)",
        r"address (is )?invalid", r"invalid address", r"mailbox not available",
        r"(wrong|no longer valid) .{0,20}address|address is wrong", r"could not be found",
        r"no matches to nameserver query", r"did not exactly match an? [\w. ]*address",
        r"宛先不明|(ユーザー?|アドレス|宛先)が(存在しません|見つかりません)|存在しない(ユーザー?|アドレス)",
        r"用户不存在|收件人不存在|无此用户|帐号不存在|账号不存在")),
    ("hostunknown", True, _rx(
        r"host (or domain name )?(not found|unknown)", r"host [\w.-]+ (not found|unknown)",
        r"unknown host", r"host unknown",
        r"domain (name )?(not found|does not exist|unknown|is not valid)", r"no such domain",
        r"name or service not known", r"unrout(e)?able (mail )?domain", r"domain not found",
        r"illegal host/domain", r"host name lookup failure", r"unknown domain",
        r"no mx (record|host)", r"nxdomain", r"domain (is )?invalid", r"invalid domain",
        r"recipient domain .{0,40}does not exist", r"not a valid domain",
        r"account or domain may not exist",
        r"(couldn't|could not|unable to) find (a |any )?(mail exchanger|host)",
        r"ドメインが存在しません|域名不存在")),
    ("notaccept", True, _rx(
        r"null mx", r"does not accept (e-?)?mail", r"not accept(ing)? (any )?(e-?)?mail",
        r"accepts no mail", r"no mail (is )?accepted", r"indicated no smtp service",
        r"no mx found")),
]
HARD_REASONS = {reason for reason, hard, _ in RULES if hard}
#: Reasons that are soft and not even counted against the address: about us, or policy.
FLAGGED = {"sender", "blocked", "listrejected"}

# Words that leave no doubt that the mailbox does not exist, believed even beside a 4.x.x code.
_NONEXISTENT = _rx(
    r"no such (user|mailbox|recipient|account)", r"user (is )?unknown(?! host)",
    r"unknown (user|recipient|mailbox)", r"(user|mail ?box|recipient|account|address) "
    r"(does not|doesn't) exist", r"(does ?n[o']t|doesn't) have an? ([\w.-]+ )?account")
_HARD_STATUS = {"5.1.1": "userunknown", "5.1.2": "hostunknown", "5.1.3": "userunknown",
                "5.1.6": "hasmoved", "5.1.10": "notaccept", "5.3.2": "notaccept",
                "5.7.27": "notaccept"}
_SOFT_STATUS = {"5.2.2": "mailboxfull", "5.2.3": "mesgtoobig", "5.2.1": "suspend",
                "5.2.0": "filtered", "5.4.7": "expired"}
_MAILBOX_STATE = {"mailboxfull", "mesgtoobig", "suspend"}


def judge(status: str | None, text: str, context: str = "",
          recipient: str | None = None) -> tuple[str, bool]:
    """The reason and hardness of one failure, from its status code and diagnostic text.

    ``context`` is the text around the diagnostic (the SMTP transcript), read for the command
    the server was answering; ``recipient`` is the failed address, when known. See the module's
    docstring for the order of the evidence.
    """
    text = re.sub(r"\s+", " ", text[:_MAX_TEXT])
    status = status or ""
    if status in ("5.1.7", "5.1.8") or _SENDER.search(text):
        return "sender", False
    reason = first_reason(text)
    if status.startswith("5.7.") and status not in _HARD_STATUS or reason == "blocked":
        return "blocked", False
    if status.startswith("4."):
        if reason == "notaccept" or reason == "userunknown" and _NONEXISTENT.search(text):
            return reason, True  # a domain that takes no mail; a user that does not exist
        return reason if reason and reason not in HARD_REASONS else "temporary", False
    if status.startswith("5.2.") and status != "5.2.1":  # 5.2.1 "disabled" often means unknown
        return reason if reason in _MAILBOX_STATE else _SOFT_STATUS.get(status, "filtered"), False
    if status in _HARD_STATUS:
        if reason in _MAILBOX_STATE or reason == "dnstemporary":
            return reason, False
        return (reason if reason in HARD_REASONS else _HARD_STATUS[status]), True
    stage = smtp_stage(text + "\n" + context)
    if reason == "userunknown" and _GENERIC_UNKNOWN.search(text) and (stage == "DATA" or (
            stage != "RCPT" and not status.startswith("5.1.")
            and _FILTERING_CARRIER.search(recipient or text))):
        return "filtered", False  # a content filter's "User unknown"
    if status == "5.2.1" and not (reason == "userunknown" and stage == "RCPT"):
        return (reason if reason in _MAILBOX_STATE else "suspend"), False
    if reason:
        return reason, reason in HARD_REASONS
    if stage == "RCPT" and _ABOUT_ADDRESS.match(status or "5.0.0") and (
            status.startswith("5.") or _PERMANENT_REPLY.search(text)):
        return "rejected", True  # refused as a recipient, nothing else said
    return _SOFT_STATUS.get(status, ""), False


# Japanese mobile carriers answer "User unknown" for mail their subscribers' filters refuse.
_FILTERING_CARRIER = re.compile(
    r"@([\w-]+\.)*(ezweb\.ne\.jp|au\.com|docomo\.ne\.jp|softbank\.ne\.jp|i\.softbank\.jp|"
    r"vodafone\.ne\.jp|disney\.ne\.jp|pdx\.ne\.jp|willcom\.com|emnet\.ne\.jp|"
    r"ymobile\.ne\.jp)\b", re.IGNORECASE)
_GENERIC_UNKNOWN = _rx(r"user (is )?unknown", r"unknown user")
# Codes that leave the address in question: generic (x.0.0), addressing (x.1.x) or protocol
# (x.5.x); not the mail system (x.3.x), network (x.4.x) or content (x.6.x).
_ABOUT_ADDRESS = re.compile(r"5\.([015])\.\d+$")
_MAX_TEXT = 6000  # characters of a report read for one verdict: its words come first
_PERMANENT_REPLY = re.compile(r"(?<![\w.])55[0-4](?=[ -])")
_STAGE = re.compile(
    r"(?P<RCPT>in reply to rcpt to|after rcpt( to)?\b|>>> rcpt to|rcpt to command|rcpt to:|"
    r"rcpt_to|smtp:rcpt|rejected (the )?(recipient )?address|recipient address rejected|"
    r"does not like recipient)|"
    r"(?P<DATA>end of data|in reply to data|after data|>>> data\s*<<< [45]|final data)|"
    r"(?P<MAIL>in reply to mail from|after mail from|>>> mail from)", re.IGNORECASE)


def smtp_stage(text: str) -> str | None:
    """The SMTP command a transcript says the server answered: "RCPT", "DATA", "MAIL" or None."""
    match = _STAGE.search(re.sub(r"\s+", " ", text))
    return match.lastgroup if match else None


@lru_cache(maxsize=256)
def first_reason(text: str) -> str:
    """The reason named by the first of :data:`RULES` that matches ``text``; "" for none."""
    for reason, _hard, pattern in RULES:
        if pattern.search(text):
            return reason
    return ""


# -- codes -----------------------------------------------------------------------------------

_ENHANCED = re.compile(r"(?<![\w.])([245])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)")
_REPLY_AND_ENHANCED = re.compile(
    r"(?<![\w.])([245]\d\d)[ :-]+#?([245]\.\d{1,3}\.\d{1,3})(?!\.?\d)")
_REPLY_CODE = re.compile(r"(?<![\w.#-])(42[01]|45[0-2]|50[0-4]|55[0-4])(?=[ -]|$)",
                         re.MULTILINE)


def status_in(text: str) -> str | None:
    """The most specific enhanced status code in ``text``, preferring one beside a reply code."""
    found = [m.group(2) for m in _REPLY_AND_ENHANCED.finditer(text)]
    found += [m.group(0) for m in _ENHANCED.finditer(text) if m.group(1) != "2"]
    specific = [s for s in found if not s.endswith(".0.0")]
    if specific:
        return specific[0]
    if found:
        return found[0]
    reply = _REPLY_CODE.search(text)
    if reply:  # a bare SMTP reply code: 550 → 5.0.0
        return f"{reply.group(1)[0]}.0.0"
    return None


def best_status(dsn_status: str | None, text: str) -> str | None:
    """A DSN's ``Status`` unless it is the generic x.0.0 and the diagnostic is more specific."""
    from_text = status_in(text)
    if dsn_status and _ENHANCED.fullmatch(dsn_status):
        if dsn_status.endswith(".0.0") and from_text and from_text[0] == dsn_status[0]:
            return from_text
        return dsn_status
    return from_text
