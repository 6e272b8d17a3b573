"""The paper's prompts (Appendix C.1): the first user message of an episode and feedback turns."""

from __future__ import annotations

from mucode_env.problem import IOStyle, Problem

FUNCTION_TEMPLATE = """Write a Python function implementation for the following prompt:

{prompt}

Your code should satisfy these tests:

{test}

Please follow the following instructions:
- Reason about the problem and any base cases before writing the code.
- You must return the implementation code in the following format:
```python
<CODE GOES HERE>
```
- You must only return a single code block since we only parse the first code block.
- Do not include any tests in your code - we will run the suite and return any error feedback.
- Include relevant import statements."""

STDIO_TEMPLATE = (
    "Provide a Python solution for the following competitive programming question: {prompt}. "
    "Your code should be enclosed in triple backticks like so: ```python YOUR CODE HERE```. "
    "Use the backticks for your code only."
)

FEEDBACK_PREFIX = "Feedback:\n"


def first_user_message(problem: Problem) -> str:
    """The paper's turn-1 prompt: the task plus its public tests (never the private ones)."""
    if problem.io_style is IOStyle.STDIO:
        return STDIO_TEMPLATE.format(prompt=problem.prompt.strip())
    tests = "\n".join(test.display.strip() for test in problem.public_tests)
    return FUNCTION_TEMPLATE.format(prompt=problem.prompt.strip(), test=tests)


def feedback_message(feedback: str) -> str:
    """The user message that carries a turn's public-test feedback."""
    return FEEDBACK_PREFIX + feedback
