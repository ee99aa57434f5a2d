#!/usr/bin/env python3
"""Writes a realistic OpenAI chat fine-tuning JSONL file for the validation benchmark.

    python3 bench/gen_dataset.py SIZE_MB OUT [--seed N]

Every line is one example of a web-builder coding assistant:

    {"messages": [{"role": "system", "content": <the same ~3,000-word system prompt>},
                  {"role": "user", "content": ...},
                  {"role": "assistant", "content": <1-6 KB answer with fenced code>},
                  (sometimes a second user/assistant turn)],
     "metadata": {"intent": "generate_code" | "fix_code" | "explain" | "iteration" | "style_question"}}

Answers mix HTML, CSS, JavaScript, TypeScript, React and Python built from templates filled
with random component names, identifiers, colours and numbers, so no two lines are equal.
With --unique-system every system prompt gets a different first line (a worst case for
validators that cache the shared prompt). Output is deterministic for given arguments. 1 MB = 1,000,000 bytes; the file
stops at the first line that reaches SIZE_MB. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

# --------------------------------------------------------------------------------------
# The shared system prompt: long, realistic product and coding guidelines.
# --------------------------------------------------------------------------------------

_PROMPT_HEAD = """\
You are Forge, the coding assistant built into File Engine Studio, a visual web builder used by \
small businesses, agencies and in-house product teams to design, build and ship websites and \
web applications. You help users write, fix, explain and restyle the code behind their projects. \
Most users are designers or marketers who know a little HTML and CSS; some are professional \
front-end and full-stack engineers. Adapt your depth to the person in front of you, but never \
compromise on correctness, accessibility or security.

# 1. Scope

You help with: HTML, CSS (including Tailwind CSS and CSS modules), JavaScript, TypeScript, React \
(function components and hooks), Next.js pages and route handlers, small Python back ends \
(FastAPI and Flask), SQL for the project's managed PostgreSQL database, build configuration \
(Vite, esbuild, PostCSS), and the File Engine Studio component library described below. You \
also answer questions about web performance, accessibility, SEO basics, forms, analytics \
snippets and deployment on File Engine Hosting.

You do not: write code that scrapes sites against their terms, bypasses paywalls or \
authentication, collects personal data without consent, sends unsolicited email, or mines \
cryptocurrency in the visitor's browser. You do not give legal, tax or medical advice; when a \
question touches privacy law (GDPR, CCPA) or accessibility law (ADA, EAA), explain the technical \
side and suggest the user confirm the legal side with a qualified professional. If a request is \
outside scope, say so in one sentence and offer the closest thing you can help with.

# 2. How to answer

1. Read the whole request, including any code the user pasted, before you answer. Identify the \
framework, the styling approach and the constraints (browser support, existing components, \
design tokens) from the code itself rather than asking, whenever the code makes them clear.
2. If the request is ambiguous in a way that changes the code substantially, ask at most one \
short clarifying question. Otherwise make a reasonable assumption, state it in one line, and \
proceed.
3. Lead with the answer. For code requests, give a one- or two-sentence summary, then the code, \
then a short list of notes: what changed, why, and anything the user must do (install a \
package, add an environment variable, replace a placeholder).
4. Put every piece of code in a fenced code block with a language tag: html, css, js, jsx, ts, \
tsx, python, sql, bash, json. Never put code that the user is expected to copy outside a fence.
5. When you modify existing code, return the complete updated component or function, not a \
diff, unless the file is longer than about 150 lines; in that case return the changed \
functions in full and say exactly where they go.
6. Keep prose short. Prefer bullet points to paragraphs. Do not repeat the user's question. Do \
not apologise for things that are not your fault. Do not pad answers with generic advice.
7. Use the user's naming, indentation and quote style. If their code uses two-space \
indentation and double quotes, so does yours. If they use semicolons, keep them.
8. Never invent APIs. If you are not sure that a browser API, a library function or a File \
Engine Studio prop exists, say so and give a version that uses only what you are sure of.
9. When you explain code, explain what it does in the order it runs, name the key concepts \
(event loop, specificity, reconciliation, closures) and link them to the user's actual lines.
10. End with at most one suggestion for a next step, and only when it is genuinely useful.

# 3. HTML

- Use semantic elements: header, nav, main, section, article, aside, footer, figure, button, \
form, label, fieldset. Use div and span only for layout and styling hooks.
- Every page has exactly one h1; heading levels do not skip.
- Every img has an alt attribute: descriptive for meaningful images, empty for decorative ones. \
Always set width and height (or aspect-ratio in CSS) to prevent layout shift, and add \
loading="lazy" to images below the fold.
- Every form control has a visible label associated through for/id or by nesting. Placeholders \
are not labels. Group related radio buttons and checkboxes in a fieldset with a legend.
- Use button for actions and a for navigation. Never attach click handlers to div elements.
- Links that open a new tab get rel="noopener noreferrer" and say so in the accessible name or \
with a visually hidden hint.
- Include lang on the html element, a meta viewport tag, and a meaningful title.

# 4. CSS

- Prefer the project's design tokens (CSS custom properties listed in section 9) over literal \
values. If a value has no token, use rem for type and spacing and explain why a token was not \
used.
- Layout with flexbox and grid. Do not use floats for layout or absolute positioning for flow \
content. Use gap instead of margins between flex and grid children.
- Mobile first: base styles target small screens; add min-width media queries at the project's \
breakpoints (sm 640px, md 768px, lg 1024px, xl 1280px). Prefer container queries for \
components that appear in containers of different widths.
- Keep specificity low: single class selectors, no IDs, no !important except to override \
third-party styles, and then with a comment.
- Respect prefers-reduced-motion: wrap non-essential animations and transitions in a media \
query, or disable them when it is set. Animate only transform and opacity.
- Support dark mode through the [data-theme="dark"] attribute on the html element, never by \
duplicating whole stylesheets.
- Focus styles must be visible: use :focus-visible with an outline of at least 2px that meets \
3:1 contrast against adjacent colours. Never remove outlines without a replacement.
- Text contrast meets WCAG 2.2 AA: 4.5:1 for body text, 3:1 for large text and UI components.
- For Tailwind projects, use the project's theme extension instead of arbitrary values, keep \
class lists readable (layout, box, type, colour, state, in that order) and extract repeated \
combinations into components, not @apply chains.

# 5. JavaScript and TypeScript

- Write modern JavaScript (ES2022): const and let, arrow functions for callbacks, optional \
chaining, nullish coalescing, async/await instead of promise chains, modules instead of globals.
- In TypeScript, enable strict mode; avoid any (use unknown and narrow it); type function \
parameters and return values of exported functions; prefer type aliases for unions and \
interfaces for object shapes that are extended.
- Handle errors where they can be handled: check response.ok after fetch, show the user a \
helpful message, and log the technical detail. Never swallow errors silently.
- Debounce handlers of input, scroll and resize events that trigger work; use passive listeners \
for scroll and touch.
- Do not block the main thread: move heavy computation to a Web Worker or split it with \
requestIdleCallback. Avoid layout thrashing by batching reads before writes.
- Never use eval, new Function, document.write or innerHTML with untrusted input. Build DOM \
with textContent and createElement, or sanitise with the project's sanitizeHtml helper.
- Store no secrets in client code. API keys that must stay private belong in server-side \
environment variables, read in a route handler or back-end function.

# 6. React

- Function components and hooks only. Name components in PascalCase and hooks useSomething.
- Keep components small and focused; lift state only as far as needed. Derive values during \
render instead of duplicating them in state.
- useEffect is for synchronising with external systems. Do not use it to transform data for \
rendering or to respond to user events; do that in event handlers. Every effect that \
subscribes must clean up.
- Lists need stable keys from the data, never array indexes when items can be reordered.
- Forms: controlled inputs for small forms; for larger ones use the File Engine Studio Form \
component, which handles validation and submission state.
- Memoise with useMemo and useCallback only when a measurement or a dependency of a memoised \
child requires it; explain why when you add one.
- Fetch data with the project's useQuery hook (it wraps caching and retries). Show loading, \
error and empty states explicitly.
- Accessibility in React: use the Dialog, Menu, Tabs and Tooltip primitives from the component \
library, which manage focus and ARIA; do not rebuild them from divs.

# 7. Python back ends

- Target Python 3.11 or newer. Use type hints, dataclasses or Pydantic models for request and \
response bodies, and f-strings for formatting.
- FastAPI: declare request bodies as Pydantic models, return response models, raise \
HTTPException with a clear detail message, and use dependency injection for the database \
session and the current user.
- Never build SQL by string concatenation. Use parameterised queries or the ORM.
- Read configuration from environment variables through a settings object; never hard-code \
credentials, and never print them in logs.
- Validate and limit uploads: check content type and size before reading the body into memory.
- Write small pure functions that can be unit-tested with pytest, and include a test when you \
add non-trivial logic.

# 8. Security, privacy and performance

- Treat all user input as untrusted, on the client and on the server. Validate on the server \
even when the client validates too.
- Set cookies with Secure, HttpOnly and SameSite=Lax unless there is a documented reason not to.
- Load third-party scripts with async or defer, and only after consent when they set cookies or \
track visitors; use the Studio ConsentGate component for analytics snippets.
- Images: serve modern formats through the Studio Image component, which generates AVIF and \
WebP variants and a srcset. Fonts: at most two families, font-display: swap, preload only the \
weights used above the fold.
- Budget for every page: Largest Contentful Paint under 2.5 s on a mid-range phone, \
Cumulative Layout Shift under 0.1, Interaction to Next Paint under 200 ms, and under 170 KB \
of compressed JavaScript on the critical path.
"""

_PROMPT_TAIL = """\
# 11. Tone and format of replies

Write in plain, friendly, professional English. Address the user as "you". Use the user's \
terminology. Avoid jargon when the user is clearly not a developer, and define a term the \
first time you use it. Do not use emoji unless the user does. Do not claim to have run code, \
opened a URL or seen the user's screen. If you are unsure whether code works in every browser \
the project supports (the last two versions of Chrome, Edge, Firefox and Safari, and Safari on \
iOS 16 or newer), say which part is uncertain and how to test it.

When a user's code has several problems, fix the one they asked about first, then list the \
others briefly in order of severity, and offer to fix them. When a user asks for something that \
would hurt accessibility or security (for example removing focus outlines or putting an API \
key in client code), explain the risk in one or two sentences and offer a safe alternative that \
meets their underlying goal.

# 12. Examples of good behaviour

- A user pastes a pricing section and asks to "make it look more modern". Pick two or three \
concrete changes (spacing scale, card elevation, a highlighted recommended plan), apply them \
using the design tokens, return the full section, and list what changed.
- A user asks why their sticky header jumps. Explain that the header leaves the flow when it \
becomes fixed, show the fix with position: sticky and a top offset, and mention the \
overflow: hidden on an ancestor that commonly breaks sticky positioning.
- A user asks for a contact form that emails them. Build the form with labels, validation and \
a honeypot field, post it to a route handler that sends the message through the project's \
mail integration, and remind them to set the MAIL_TO environment variable.
- A user asks what a piece of code does. Walk through it in execution order, reference the \
actual variable names, and point out anything surprising, such as a stale closure or a \
missing dependency in an effect.

Always remember: the user will paste your code into a live project. Correct, accessible, \
secure code that matches their project is worth more than clever code.
"""

_COMPONENTS = [
    ("Button", "variant (primary | secondary | ghost | danger), size (sm | md | lg), icon, loading, asChild"),
    ("IconButton", "label (required, used as aria-label), icon, size, variant"),
    ("Link", "href, external (adds rel and a new-tab hint), underline (always | hover | none)"),
    ("Card", "as, padding (token name), elevation (0-3), interactive, header, footer"),
    ("Stack", "direction (row | column), gap (token name), align, justify, wrap"),
    ("Grid", "columns (number or responsive object), gap, minItemWidth"),
    ("Container", "size (sm | md | lg | xl | full), padding"),
    ("Section", "tone (default | muted | brand | inverse), spacing (sm | md | lg)"),
    ("Heading", "level (1-6), size (token name, independent of level), align"),
    ("Text", "as, size, weight, tone (default | muted | danger | success), truncate, lines"),
    ("Image", "src, alt (required), width, height, priority, sizes, fit (cover | contain)"),
    ("Avatar", "src, name (initials fallback), size, status (online | away | offline)"),
    ("Badge", "tone (neutral | info | success | warning | danger), size, dot"),
    ("Tag", "label, onRemove, tone"),
    ("Input", "label (required), hint, error, type, prefix, suffix, all native input props"),
    ("Textarea", "label, hint, error, rows, autoResize, maxLength (shows a counter)"),
    ("Select", "label, options ({value, label, disabled}[]), placeholder, error"),
    ("Checkbox", "label, description, checked, indeterminate, onCheckedChange"),
    ("RadioGroup", "legend, options, value, onValueChange, orientation"),
    ("Switch", "label, checked, onCheckedChange, description"),
    ("Form", "schema (zod), defaultValues, onSubmit (async), resetOnSuccess"),
    ("Dialog", "open, onOpenChange, title (required), description, size, initialFocus"),
    ("Drawer", "open, onOpenChange, side (left | right | bottom), title"),
    ("Menu", "trigger, items ({label, onSelect, icon, shortcut, disabled}[])"),
    ("Tabs", "items ({id, label, content}[]), value, onValueChange, variant (line | pill)"),
    ("Accordion", "items ({id, title, content}[]), type (single | multiple), defaultOpen"),
    ("Tooltip", "content, side, delay (ms, default 300); never put interactive content inside"),
    ("Toast", "use the useToast hook: toast({title, description, tone, action})"),
    ("Table", "columns ({key, header, sortable, align, render}[]), rows, loading, emptyState"),
    ("Pagination", "page, pageCount, onPageChange, siblingCount"),
    ("Breadcrumbs", "items ({label, href}[]); the last item is the current page"),
    ("Navbar", "logo, links ({label, href}[]), actions, sticky, collapseAt (breakpoint)"),
    ("Footer", "columns ({title, links}[]), legal, social"),
    ("Hero", "eyebrow, title, subtitle, actions, media, align (left | center)"),
    ("PricingTable", "plans ({name, price, period, features, cta, highlighted}[]), currency"),
    ("FeatureGrid", "features ({icon, title, description}[]), columns"),
    ("Testimonial", "quote, author, role, avatar, rating"),
    ("Stat", "label, value, delta, trend (up | down | flat)"),
    ("Skeleton", "width, height, radius, lines"),
    ("Spinner", "size, label (visually hidden, default 'Loading')"),
    ("EmptyState", "icon, title, description, action"),
    ("ConsentGate", "category (analytics | marketing), fallback, children"),
    ("VideoEmbed", "provider (youtube | vimeo), id, title (required), poster, privacyMode"),
    ("MapEmbed", "address, zoom, height, title (required)"),
]

_TOKENS = [
    ("--color-bg", "#ffffff", "page background"),
    ("--color-bg-muted", "#f6f7f9", "muted section background"),
    ("--color-surface", "#ffffff", "cards, popovers"),
    ("--color-text", "#111827", "body text"),
    ("--color-text-muted", "#4b5563", "secondary text"),
    ("--color-border", "#e5e7eb", "hairlines and input borders"),
    ("--color-brand", "#4f46e5", "primary actions and links"),
    ("--color-brand-hover", "#4338ca", "hover state of brand elements"),
    ("--color-brand-contrast", "#ffffff", "text on brand backgrounds"),
    ("--color-success", "#047857", "success messages"),
    ("--color-warning", "#b45309", "warnings"),
    ("--color-danger", "#b91c1c", "errors and destructive actions"),
    ("--color-focus", "#2563eb", "focus rings"),
    ("--space-1", "0.25rem", "hairline gaps"),
    ("--space-2", "0.5rem", "tight gaps inside controls"),
    ("--space-3", "0.75rem", "gaps between related items"),
    ("--space-4", "1rem", "default gap"),
    ("--space-6", "1.5rem", "card padding"),
    ("--space-8", "2rem", "gaps between groups"),
    ("--space-12", "3rem", "section padding on mobile"),
    ("--space-16", "4rem", "section padding on desktop"),
    ("--radius-sm", "4px", "inputs, tags"),
    ("--radius-md", "8px", "buttons, cards"),
    ("--radius-lg", "16px", "dialogs, feature panels"),
    ("--radius-full", "9999px", "pills and avatars"),
    ("--shadow-1", "0 1px 2px rgb(0 0 0 / 0.06)", "resting cards"),
    ("--shadow-2", "0 4px 12px rgb(0 0 0 / 0.08)", "hovered cards, menus"),
    ("--shadow-3", "0 12px 32px rgb(0 0 0 / 0.12)", "dialogs"),
    ("--font-sans", "'Inter', system-ui, sans-serif", "all UI text"),
    ("--font-mono", "'JetBrains Mono', ui-monospace, monospace", "code"),
    ("--text-xs", "0.75rem", "captions"),
    ("--text-sm", "0.875rem", "secondary text, labels"),
    ("--text-md", "1rem", "body"),
    ("--text-lg", "1.125rem", "lead paragraphs"),
    ("--text-xl", "1.25rem", "card titles"),
    ("--text-2xl", "1.5rem", "section titles on mobile"),
    ("--text-4xl", "2.25rem", "section titles on desktop"),
    ("--text-6xl", "3.75rem", "hero titles"),
    ("--duration-fast", "120ms", "hover and press feedback"),
    ("--duration-base", "200ms", "menus, tooltips"),
    ("--duration-slow", "320ms", "dialogs, drawers"),
    ("--ease-standard", "cubic-bezier(0.2, 0, 0, 1)", "most transitions"),
]


def _system_prompt() -> str:
    parts = [_PROMPT_HEAD, "\n# 9. Design tokens\n\n"]
    parts.append(
        "The project's stylesheet defines these custom properties on :root (dark-mode values "
        "are defined under [data-theme=\"dark\"] with the same names). Use them instead of "
        "literal values:\n\n"
    )
    for name, value, use in _TOKENS:
        parts.append(f"- `{name}`: `{value}`, for {use}.\n")
    parts.append("\n# 10. File Engine Studio component library\n\n")
    parts.append(
        "Import components from \"@file-engine/studio\". Prefer them to hand-written "
        "equivalents: they are accessible, themed with the tokens above and tested on every "
        "supported browser. Props of each component:\n\n"
    )
    for name, props in _COMPONENTS:
        parts.append(f"- `{name}`: {props}.\n")
    parts.append("\n")
    parts.append(_PROMPT_TAIL)
    return "".join(parts)


SYSTEM_PROMPT = _system_prompt()

# --------------------------------------------------------------------------------------
# Vocabulary for the variable parts.
# --------------------------------------------------------------------------------------

NOUNS = [
    "Pricing", "Hero", "Feature", "Testimonial", "Newsletter", "Contact", "Team", "Product",
    "Checkout", "Cart", "Order", "Invoice", "Booking", "Event", "Menu", "Gallery", "Blog",
    "Author", "Comment", "Profile", "Settings", "Dashboard", "Metric", "Report", "Search",
    "Filter", "Review", "Faq", "Banner", "Footer", "Sidebar", "Navbar", "Timeline", "Roadmap",
    "Changelog", "Portfolio", "Case", "Recipe", "Course", "Lesson", "Ticket", "Inventory",
    "Shipment", "Appointment", "Listing", "Property", "Job", "Candidate", "Workspace", "Plan",
]
SUFFIXES = [
    "Card", "List", "Section", "Panel", "Grid", "Table", "Form", "Modal", "Banner", "Widget",
    "Header", "Item", "Row", "Tile", "Carousel", "Summary", "Badge", "Drawer", "Tabs", "View",
]
FIELDS = [
    "title", "price", "description", "imageUrl", "rating", "createdAt", "author", "status",
    "quantity", "email", "phone", "category", "tags", "slug", "total", "discount", "dueDate",
    "location", "capacity", "duration", "level", "avatarUrl", "role", "company", "updatedAt",
]
COLORS = [
    "#4f46e5", "#0ea5e9", "#10b981", "#f59e0b", "#ef4444", "#8b5cf6", "#ec4899", "#14b8a6",
    "#f97316", "#6366f1", "#22c55e", "#0f172a", "#334155", "#e11d48", "#7c3aed", "#059669",
]
BUSINESSES = [
    "a bakery in Lyon", "a yoga studio", "a dental clinic", "a SaaS analytics startup",
    "a law firm", "a coffee roaster", "a wedding photographer", "a bike repair shop",
    "a language school", "an architecture studio", "a non-profit food bank", "a craft brewery",
    "a climbing gym", "a pet grooming salon", "an online bookstore", "a real-estate agency",
    "a freelance translator", "a mobile game studio", "a local newspaper", "a florist",
]
TOPICS = [
    "closures", "the event loop", "CSS specificity", "React reconciliation", "useEffect cleanup",
    "stacking contexts", "flexbox shrinking", "grid auto-placement", "promise chaining",
    "debouncing", "CORS preflight requests", "hydration mismatches", "async generators",
    "the cascade layers feature", "container queries", "optional chaining",
]
ENDPOINTS = [
    "orders", "bookings", "subscribers", "products", "reviews", "tickets", "invoices",
    "messages", "events", "members", "projects", "payments", "leads", "coupons",
]
PY_TYPES = ["str", "int", "float", "bool", "datetime", "Decimal", "list[str]", "str | None"]
TS_TYPES = ["string", "number", "boolean", "string[]", "Date", "number | null", "'draft' | 'published'"]
BUGS = [
    ("the list re-renders and loses input focus", "the key is the array index, so React remounts rows when items are inserted"),
    ("the counter always shows 1", "the interval callback closes over the first render's state"),
    ("the fetch runs in an infinite loop", "the effect depends on an object that is recreated on every render"),
    ("the dropdown is hidden behind the hero", "the hero creates a stacking context with a higher z-index"),
    ("the grid overflows on mobile", "the columns use a fixed minimum width larger than the viewport"),
    ("the form submits twice", "both the button's onClick and the form's onSubmit call the handler"),
    ("the modal can't be closed with Escape", "the keydown listener is attached to a div that never has focus"),
    ("the total shows 0.30000000000000004", "prices are summed as floating-point numbers instead of cents"),
    ("the sticky header stops sticking", "an ancestor has overflow: hidden"),
    ("the API returns 422", "the request body sends a string where the Pydantic model expects an integer"),
    ("the dark-mode toggle flickers on load", "the theme is read from localStorage after the first paint"),
    ("the image stretches", "width and height are set in CSS without object-fit"),
]
OPENERS = [
    "Here's a version that uses the design tokens and the Studio components where they fit.",
    "Below is a complete, accessible implementation you can paste into your project.",
    "This keeps your existing naming and indentation; only the parts that needed changes differ.",
    "Sure. I assumed you're on React 18 with TypeScript, based on the imports in your file.",
    "Here's the component, plus the styles it needs. It's mobile first and supports dark mode.",
    "Good catch — this is a common pitfall. Here's what's going on and how to fix it.",
    "Short answer: yes, and it only takes a few lines. Here's how.",
]
NOTES = [
    "Spacing and colours come from the design tokens, so dark mode works without extra CSS.",
    "The button keeps a visible focus ring via :focus-visible.",
    "Animations are disabled when the user prefers reduced motion.",
    "Images have explicit width and height to avoid layout shift.",
    "Errors from the API are shown to the user and logged with the response status.",
    "The list uses the item id as key, so reordering doesn't remount rows.",
    "All inputs have visible labels; the hint text is linked with aria-describedby.",
    "The handler is debounced by {ms} ms so typing doesn't fire a request per keystroke.",
    "Prices are handled in cents to avoid floating-point rounding.",
    "The effect cleans up its subscription when the component unmounts.",
    "Replace `{placeholder}` with your own value before publishing.",
    "If you use Tailwind, the same layout is `grid gap-6 sm:grid-cols-2 lg:grid-cols-{n}`.",
]


class Gen:
    """Builds examples from one seeded random source."""

    def __init__(self, seed: int, unique_system: bool = False) -> None:
        self.r = random.Random(seed)
        self.serial = 0
        self.unique_system = unique_system

    # ---- small helpers ---------------------------------------------------------------

    def pick(self, seq):
        return seq[int(self.r.random() * len(seq))]

    def num(self, lo: int, hi: int) -> int:
        return lo + int(self.r.random() * (hi - lo + 1))

    def component(self) -> str:
        return self.pick(NOUNS) + self.pick(SUFFIXES)

    def ident(self) -> str:
        self.serial += 1
        return f"{self.pick(FIELDS)}{self.serial % 97}"

    def kebab(self, name: str) -> str:
        out = []
        for i, c in enumerate(name):
            if c.isupper() and i:
                out.append("-")
            out.append(c.lower())
        return "".join(out)

    # ---- code snippets ---------------------------------------------------------------

    def react_component(self, name: str) -> str:
        fields = self.r.sample(FIELDS, self.num(3, 6))
        ts = self.r.random() < 0.6
        item = name.replace("List", "").replace("Grid", "") or "Item"
        lines = []
        lines.append(f"import {{ useMemo, useState }} from \"react\";")
        lines.append(f"import {{ Card, Stack, Text, Button, Badge }} from \"@file-engine/studio\";")
        lines.append(f"import styles from \"./{name}.module.css\";")
        lines.append("")
        if ts:
            lines.append(f"export type {item}Data = {{")
            lines.append("  id: string;")
            for f in fields:
                lines.append(f"  {f}: {self.pick(TS_TYPES)};")
            lines.append("};")
            lines.append("")
            lines.append(f"type {name}Props = {{")
            lines.append(f"  items: {item}Data[];")
            lines.append(f"  onSelect?: (id: string) => void;")
            lines.append(f"  pageSize?: number;")
            lines.append("};")
            lines.append("")
            sig = f"export function {name}({{ items, onSelect, pageSize = {self.num(3, 24)} }}: {name}Props)"
        else:
            sig = f"export function {name}({{ items, onSelect, pageSize = {self.num(3, 24)} }})"
        sort_key = fields[0]
        lines.append(sig + " {")
        lines.append(f"  const [page, setPage] = useState(0);")
        lines.append(f"  const [query, setQuery] = useState(\"\");")
        lines.append("")
        lines.append("  const visible = useMemo(() => {")
        lines.append("    const q = query.trim().toLowerCase();")
        lines.append("    return items")
        lines.append(f"      .filter((item) => !q || String(item.{fields[1]}).toLowerCase().includes(q))")
        lines.append(f"      .sort((a, b) => String(a.{sort_key}).localeCompare(String(b.{sort_key})))")
        lines.append("      .slice(page * pageSize, (page + 1) * pageSize);")
        lines.append("  }, [items, query, page, pageSize]);")
        lines.append("")
        lines.append("  if (items.length === 0) {")
        lines.append(f"    return <Text tone=\"muted\">No {self.kebab(item).replace('-', ' ')} entries yet.</Text>;")
        lines.append("  }")
        lines.append("")
        lines.append("  return (")
        lines.append(f"    <section className={{styles.root}} aria-labelledby=\"{self.kebab(name)}-title\">")
        lines.append(f"      <h2 id=\"{self.kebab(name)}-title\" className={{styles.title}}>{self.pick(NOUNS)} overview</h2>")
        lines.append("      <label className={styles.search}>")
        lines.append("        <span>Search</span>")
        lines.append("        <input type=\"search\" value={query} onChange={(e) => { setQuery(e.target.value); setPage(0); }} />")
        lines.append("      </label>")
        lines.append(f"      <Stack direction=\"column\" gap=\"space-{self.pick(['3', '4', '6'])}\">")
        lines.append("        {visible.map((item) => (")
        lines.append("          <Card key={item.id} interactive elevation={1} padding=\"space-6\">")
        for f in fields[:3]:
            lines.append(f"            <Text size=\"sm\" tone=\"muted\">{f}: {{String(item.{f})}}</Text>")
        lines.append(f"            <Badge tone=\"{self.pick(['info', 'success', 'warning', 'neutral'])}\">{{item.{fields[-1]} ? \"Active\" : \"Draft\"}}</Badge>")
        lines.append("            <Button variant=\"secondary\" size=\"sm\" onClick={() => onSelect?.(item.id)}>")
        lines.append(f"              {self.pick(['View details', 'Open', 'Edit', 'Select', 'Manage'])}")
        lines.append("            </Button>")
        lines.append("          </Card>")
        lines.append("        ))}")
        lines.append("      </Stack>")
        lines.append("      <nav className={styles.pager} aria-label=\"Pagination\">")
        lines.append("        <Button variant=\"ghost\" disabled={page === 0} onClick={() => setPage((p) => p - 1)}>Previous</Button>")
        lines.append("        <Button variant=\"ghost\" disabled={(page + 1) * pageSize >= items.length} onClick={() => setPage((p) => p + 1)}>Next</Button>")
        lines.append("      </nav>")
        lines.append("    </section>")
        lines.append("  );")
        lines.append("}")
        lang = "tsx" if ts else "jsx"
        return f"```{lang}\n" + "\n".join(lines) + "\n```"

    def css_module(self, name: str) -> str:
        color = self.pick(COLORS)
        cols = self.num(2, 4)
        minw = self.num(14, 22)
        gap = self.pick(["var(--space-4)", "var(--space-6)", "var(--space-8)"])
        return f"""```css
/* {name}.module.css */
.root {{
  display: grid;
  gap: {gap};
  padding-block: var(--space-12);
  padding-inline: var(--space-4);
  background: var(--color-bg-muted);
  container-type: inline-size;
}}

.title {{
  font: 600 var(--text-2xl) / 1.2 var(--font-sans);
  color: var(--color-text);
  margin: 0;
}}

.search {{
  display: flex;
  flex-direction: column;
  gap: var(--space-2);
  max-width: {self.num(20, 40)}rem;
  font-size: var(--text-sm);
}}

.search input {{
  padding: var(--space-2) var(--space-3);
  border: 1px solid var(--color-border);
  border-radius: var(--radius-sm);
}}

.search input:focus-visible {{
  outline: 2px solid var(--color-focus);
  outline-offset: 2px;
}}

.accent {{
  border-inline-start: 4px solid {color};
  transition: transform var(--duration-fast) var(--ease-standard);
}}

.accent:hover {{
  transform: translateY(-{self.num(1, 4)}px);
}}

.pager {{
  display: flex;
  justify-content: space-between;
  gap: var(--space-3);
}}

@container (min-width: {minw * 16}px) {{
  .root {{
    grid-template-columns: repeat({cols}, minmax({minw}rem, 1fr));
  }}
}}

@media (min-width: 1024px) {{
  .root {{
    padding-block: var(--space-16);
  }}
  .title {{
    font-size: var(--text-4xl);
  }}
}}

@media (prefers-reduced-motion: reduce) {{
  .accent {{
    transition: none;
  }}
}}
```"""

    def html_section(self, name: str) -> str:
        slug = self.kebab(name)
        business = self.pick(BUSINESSES)
        n = self.num(2, 4)
        items = []
        for i in range(n):
            price = self.num(5, 299)
            items.append(f"""      <article class="{slug}__item">
        <img src="/images/{slug}-{i + 1}.webp" alt="{self.pick(NOUNS)} photo {i + 1}" width="{self.num(3, 8) * 80}" height="{self.num(2, 6) * 80}" loading="lazy">
        <h3>{self.pick(NOUNS)} {self.pick(['Basic', 'Plus', 'Pro', 'Studio', 'Team'])}</h3>
        <p>Everything {business} needs, from ${price} per month.</p>
        <a class="button" href="/signup?plan={i + 1}">Get started</a>
      </article>""")
        body = "\n".join(items)
        return f"""```html
<section class="{slug}" aria-labelledby="{slug}-heading">
  <div class="container">
    <h2 id="{slug}-heading">{self.pick(['Plans for every stage', 'What we offer', 'Our services', 'Choose your package', 'Featured work'])}</h2>
    <p class="{slug}__lead">Trusted by {self.num(50, 9000)} customers since {self.num(1995, 2022)}.</p>
    <div class="{slug}__grid">
{body}
    </div>
  </div>
</section>
```"""

    def js_util(self) -> str:
        fn = self.pick(["fetch", "load", "sync", "submit", "refresh", "save"]) + self.pick(NOUNS) + self.pick(["s", "Data", "Items", "Details"])
        ep = self.pick(ENDPOINTS)
        ms = self.num(150, 800)
        retries = self.num(2, 5)
        ts = self.r.random() < 0.5
        sig = f"export async function {fn}(params{': Record<string, string>' if ts else ''} = {{}}, {{ signal }}{': { signal?: AbortSignal }' if ts else ''} = {{}})"
        return f"""```{'ts' if ts else 'js'}
const API_BASE = import.meta.env.VITE_API_BASE ?? "/api";
const RETRIES = {retries};

function sleep(ms{': number' if ts else ''}) {{
  return new Promise((resolve) => setTimeout(resolve, ms));
}}

{sig} {{
  const url = new URL(`${{API_BASE}}/{ep}`, window.location.origin);
  Object.entries(params).forEach(([key, value]) => url.searchParams.set(key, value));

  for (let attempt = 0; attempt <= RETRIES; attempt++) {{
    try {{
      const response = await fetch(url, {{ signal, headers: {{ Accept: "application/json" }} }});
      if (response.status >= 500 && attempt < RETRIES) {{
        await sleep({ms} * 2 ** attempt);
        continue;
      }}
      if (!response.ok) {{
        throw new Error(`Request to /{ep} failed with ${{response.status}}`);
      }}
      return await response.json();
    }} catch (error) {{
      if (error{' as Error' if ts else ''}.name === "AbortError" || attempt === RETRIES) throw error;
      await sleep({ms} * 2 ** attempt);
    }}
  }}
}}

export function debounce(fn, wait = {self.num(150, 500)}) {{
  let timer;
  return (...args) => {{
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), wait);
  }};
}}
```"""

    def ts_hook(self) -> str:
        noun = self.pick(NOUNS)
        ep = self.pick(ENDPOINTS)
        fields = self.r.sample(FIELDS, self.num(2, 5))
        typ = "\n".join(f"  {f}: {self.pick(TS_TYPES)};" for f in fields)
        return f"""```ts
import {{ useEffect, useState }} from "react";

export interface {noun}Record {{
  id: string;
{typ}
}}

type State =
  | {{ status: "loading" }}
  | {{ status: "error"; message: string }}
  | {{ status: "ready"; data: {noun}Record[] }};

export function use{noun}{self.pick(['s', 'List', 'Feed', 'Search'])}(filter: string): State {{
  const [state, setState] = useState<State>({{ status: "loading" }});

  useEffect(() => {{
    const controller = new AbortController();
    setState({{ status: "loading" }});
    fetch(`/api/{ep}?q=${{encodeURIComponent(filter)}}&limit={self.num(10, 100)}`, {{ signal: controller.signal }})
      .then(async (res) => {{
        if (!res.ok) throw new Error(`HTTP ${{res.status}}`);
        const data: {noun}Record[] = await res.json();
        setState({{ status: "ready", data }});
      }})
      .catch((err: unknown) => {{
        if (err instanceof DOMException && err.name === "AbortError") return;
        setState({{ status: "error", message: err instanceof Error ? err.message : String(err) }});
      }});
    return () => controller.abort();
  }}, [filter]);

  return state;
}}
```"""

    def python_api(self) -> str:
        noun = self.pick(NOUNS)
        ep = self.pick(ENDPOINTS)
        fields = self.r.sample(FIELDS, self.num(3, 6))
        model = "\n".join(
            f"    {self.snake(f)}: {self.pick(PY_TYPES)}" + (f" = Field(max_length={self.num(40, 400)})" if self.r.random() < 0.3 else "")
            for f in fields
        )
        limit = self.num(10, 200)
        return f"""```python
from datetime import datetime
from decimal import Decimal

from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import get_session
from app.models import {noun}
from app.auth import current_user, User

router = APIRouter(prefix="/api/{ep}", tags=["{ep}"])


class {noun}In(BaseModel):
{model}


class {noun}Out({noun}In):
    id: int
    created_at: datetime


@router.get("", response_model=list[{noun}Out])
async def list_{ep}(
    q: str | None = Query(default=None, max_length=100),
    limit: int = Query(default={limit}, le={limit * 5}),
    session: AsyncSession = Depends(get_session),
) -> list[{noun}]:
    stmt = select({noun}).order_by({noun}.created_at.desc()).limit(limit)
    if q:
        stmt = stmt.where({noun}.{self.snake(fields[0])}.ilike(f"%{{q}}%"))
    return list((await session.scalars(stmt)).all())


@router.post("", response_model={noun}Out, status_code=status.HTTP_201_CREATED)
async def create_{self.snake(noun)}(
    body: {noun}In,
    session: AsyncSession = Depends(get_session),
    user: User = Depends(current_user),
) -> {noun}:
    if not user.can_write:
        raise HTTPException(status_code=403, detail="You don't have permission to add {ep}.")
    row = {noun}(**body.model_dump(), owner_id=user.id)
    session.add(row)
    await session.commit()
    await session.refresh(row)
    return row
```"""

    def snake(self, name: str) -> str:
        return self.kebab(name).replace("-", "_")

    def python_test(self) -> str:
        ep = self.pick(ENDPOINTS)
        return f"""```python
import pytest
from httpx import AsyncClient


@pytest.mark.anyio
async def test_list_{ep}_filters_by_query(client: AsyncClient, seed_{ep}) -> None:
    response = await client.get("/api/{ep}", params={{"q": "{self.pick(NOUNS).lower()}", "limit": {self.num(1, 50)}}})
    assert response.status_code == 200
    body = response.json()
    assert len(body) <= {self.num(1, 50)}
    assert all("{self.pick(NOUNS).lower()}" in item["{self.snake(self.pick(FIELDS))}"].lower() for item in body)


@pytest.mark.anyio
async def test_create_requires_permission(client: AsyncClient, reader_token: str) -> None:
    response = await client.post(
        "/api/{ep}",
        json={{"title": "Example {self.num(1, 999)}"}},
        headers={{"Authorization": f"Bearer {{reader_token}}"}},
    )
    assert response.status_code == 403
```"""

    def small_css(self) -> str:
        sel = "." + self.kebab(self.component())
        color = self.pick(COLORS)
        return f"""```css
{sel} {{
  position: sticky;
  top: {self.num(0, 80)}px;
  z-index: {self.num(1, 50)};
  display: flex;
  align-items: center;
  gap: var(--space-{self.pick(['2', '3', '4'])});
  background: color-mix(in srgb, {color} {self.num(5, 20)}%, var(--color-surface));
  border-radius: var(--radius-{self.pick(['sm', 'md', 'lg'])});
  box-shadow: var(--shadow-{self.num(1, 3)});
}}

[data-theme="dark"] {sel} {{
  background: color-mix(in srgb, {color} {self.num(20, 40)}%, #0b1020);
}}
```"""

    def snippet(self, name: str):
        choices = [
            lambda: self.react_component(name),
            lambda: self.css_module(name),
            lambda: self.html_section(name),
            self.js_util,
            self.ts_hook,
            self.python_api,
            self.python_test,
            self.small_css,
        ]
        return self.pick(choices)()

    # ---- answers -------------------------------------------------------------------

    def notes(self, k: int) -> str:
        out = []
        for note in self.r.sample(NOTES, k):
            out.append("- " + note.format(ms=self.num(150, 600), placeholder=self.pick(["YOUR_FORM_ID", "/images/logo.svg", "hello@example.com", "G-XXXXXXX"]), n=self.num(3, 4)))
        return "\n".join(out)

    def fill(self, parts: list[str], name: str, target: int, cap: int = 5600) -> None:
        """Adds code blocks until the answer reaches `target` characters, staying under `cap`."""
        size = sum(len(p) + 2 for p in parts)
        misses = 0
        while size < target and misses < 3:
            block = self.snippet(name)
            label = self.pick([
                f"Here's the {self.pick(['stylesheet', 'data helper', 'API route', 'test', 'markup'])} to go with it:",
                "Supporting code:",
                f"If you also need the {self.pick(['server side', 'hook', 'fallback markup', 'tests'])}, here it is:",
            ])
            if size + len(label) + len(block) + 4 > cap:
                misses += 1
                continue
            parts.append(label)
            parts.append(block)
            size += len(label) + len(block) + 4

    def turn(self, intent: str) -> tuple[str, str]:
        name = self.component()
        target = self.num(1000, 6000)
        business = self.pick(BUSINESSES)
        if intent == "generate_code":
            user = self.pick([
                f"Can you build a {self.kebab(name).replace('-', ' ')} for {business}? It should show {', '.join(self.r.sample(FIELDS, 3))} and work on mobile.",
                f"I need a React component called {name} that lists items with search and pagination. We use TypeScript.",
                f"Write the HTML and CSS for a {self.pick(NOUNS).lower()} section on the homepage of {business}.",
                f"Create a FastAPI endpoint for /{self.pick(ENDPOINTS)} with validation and a test.",
            ])
            parts = [self.pick(OPENERS), self.snippet(name)]
            self.fill(parts, name, target - 300)
            parts.append("Notes:\n" + self.notes(self.num(2, 4)))
        elif intent == "fix_code":
            symptom, cause = self.pick(BUGS)
            broken = self.snippet(name)
            user = f"My {name} is broken: {symptom}. What am I doing wrong?\n\n{broken}"
            parts = [
                f"The problem: {cause}. {self.pick(['Here is the corrected version.', 'The fix is small; here is the full component with it applied.', 'Below is the fixed code, with a comment on the changed lines.'])}",
                self.snippet(name),
            ]
            self.fill(parts, name, target - 300)
            parts.append("What changed:\n" + self.notes(self.num(2, 3)))
        elif intent == "explain":
            topic = self.pick(TOPICS)
            user = f"Can you explain how {topic} affects this code? I don't get why it works.\n\n{self.snippet(name)}"
            parts = [
                f"Sure. The key idea here is {topic}. Let's walk through your code in the order it runs.",
                "\n".join(f"{i + 1}. " + step for i, step in enumerate(self.r.sample([
                    f"When `{name}` first renders, `{self.ident()}` is computed from props, so it is always in sync.",
                    f"The browser resolves the rule for `.{self.kebab(name)}` after the ones with higher specificity, which is why your override seemed ignored.",
                    f"`{self.ident()}` is captured by the callback when it is created; later updates don't change that captured value.",
                    f"The request for `/api/{self.pick(ENDPOINTS)}` starts only after the component mounts, so the first paint shows the loading state.",
                    f"Because the container has `display: grid`, its children are laid out by the grid's tracks, not by their own widths.",
                    f"Awaiting inside the loop makes the {self.num(2, 20)} requests run one after another instead of in parallel.",
                ], self.num(3, 6)))),
                "A minimal example that shows the same behaviour:",
                self.snippet(name),
            ]
            self.fill(parts, name, target - 200)
        elif intent == "iteration":
            change = self.pick([
                "make it responsive with 3 columns on desktop",
                "add a dark mode",
                f"use {self.pick(COLORS)} as the accent colour",
                "add a loading skeleton",
                "make the cards clickable but keep it accessible",
                "add sorting by price",
                "animate the cards in when they scroll into view",
            ])
            user = f"Nice, thanks! Now can you {change}?"
            parts = [f"Done — here's the updated {name} with that change. Everything else is unchanged.", self.snippet(name)]
            self.fill(parts, name, target - 200)
            parts.append(self.notes(self.num(1, 3)))
        else:  # style_question
            user = self.pick([
                f"How do I center the content of .{self.kebab(name)} vertically and horizontally?",
                f"Why does my {name} look different in Safari?",
                f"What's the best way to space the items in my {self.kebab(name).replace('-', ' ')} — margin or gap?",
                f"How can I make the {self.pick(NOUNS).lower()} heading use our brand font only on desktop?",
            ])
            parts = [
                self.pick([
                    "Use grid with place-items: it centres both axes in one line and doesn't depend on the children's sizes.",
                    "Prefer `gap` on the container: it only adds space between items, never at the edges, and works for flex and grid.",
                    "Safari differs mainly in how it handles flex `min-height` and `aspect-ratio` on replaced elements; the fix below covers both.",
                    "Set the font in a min-width media query, using the token so it stays consistent with the rest of the site.",
                ]),
                self.small_css(),
            ]
            self.fill(parts, name, min(target, 2500))
        return user, "\n\n".join(parts)

    def example(self) -> str:
        intent = self.pick(["generate_code", "generate_code", "fix_code", "explain", "iteration", "style_question"])
        system = SYSTEM_PROMPT
        if self.unique_system:
            # Worst case for a validator that caches repeated strings: every prompt differs.
            system = f"Project: {self.component()} for {self.pick(BUSINESSES)} (workspace {self.num(1000, 999999)}).\n\n" + system
        messages = [{"role": "system", "content": system}]
        first = "generate_code" if intent == "iteration" else intent
        user, answer = self.turn(first)
        messages.append({"role": "user", "content": user})
        messages.append({"role": "assistant", "content": answer})
        if intent == "iteration" or self.r.random() < 0.2:
            user2, answer2 = self.turn("iteration")
            messages.append({"role": "user", "content": user2})
            messages.append({"role": "assistant", "content": answer2})
        return json.dumps(
            {"messages": messages, "metadata": {"intent": intent}},
            ensure_ascii=False,
            separators=(", ", ": ") if self.r.random() < 0.5 else (",", ":"),
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("size_mb", type=float, help="target size in MB (1 MB = 1,000,000 bytes)")
    ap.add_argument("out", help="output JSONL path")
    ap.add_argument("--seed", type=int, default=20240806)
    ap.add_argument(
        "--unique-system",
        action="store_true",
        help="prefix each system prompt with a per-example project line, so no two are equal "
        "(defeats caching of the shared prompt; a worst case, not the realistic one)",
    )
    args = ap.parse_args()

    target = int(args.size_mb * 1_000_000)
    gen = Gen(args.seed, args.unique_system)
    written = 0
    lines = 0
    started = time.monotonic()
    chunk: list[str] = []
    chunk_bytes = 0
    with open(args.out, "w", encoding="utf-8", newline="\n") as f:
        while written < target:
            line = gen.example() + "\n"
            n = len(line.encode("utf-8")) if not line.isascii() else len(line)
            chunk.append(line)
            chunk_bytes += n
            written += n
            lines += 1
            if chunk_bytes >= 8 << 20:
                f.write("".join(chunk))
                chunk.clear()
                chunk_bytes = 0
        f.write("".join(chunk))
    took = time.monotonic() - started
    print(
        f"wrote {args.out}: {lines} examples, {written / 1e6:.1f} MB in {took:.1f} s "
        f"(system prompt {len(SYSTEM_PROMPT.split())} words, {len(SYSTEM_PROMPT.encode())} bytes)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
