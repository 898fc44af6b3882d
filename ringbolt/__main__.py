from ringbolt.cli import main

main()
