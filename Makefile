# Thin wrapper over scripts/: build, test, demo, down, clean.
BUILD_TYPE ?= RelWithDebInfo

.DEFAULT_GOAL := build
.PHONY: build test demo down clean

build:
	scripts/deps
	cmake -S . -B build -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)
	cmake --build build -j2

test:
	scripts/test

demo:
	scripts/demo

down:
	scripts/stack down

# Build trees only: the local stack's state (.run/) stays; scripts/stack down first.
clean:
	rm -rf build build-asan
