"""`python tests/with_fourth_task.py ARGS` is `nnlab ARGS` with the fourth task (sentence
classification, tests/sentence_class.py) registered: for tests that start their own processes,
such as torchrun's ranks, as a user's program that adds a task would."""

import sentence_class

from nnlab.cli import main

if __name__ == "__main__":
    sentence_class.register()
    main()
