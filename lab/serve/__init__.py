"""`dropres-lab serve`: the lab in a browser, through textual-serve (the optional `serve` extra).

Each browser tab is its own lab process (`python -m lab --store ... --file ...` under Textual's
web driver) reading the same store; training stays in the driver, so a tab that closes stops
nothing. `lab.serve.listen` checks the address and binds the port (no textual-serve needed, so
its mistakes are one line even without the extra); `lab.serve.server` serves the tabs.
"""
